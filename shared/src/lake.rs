//! Where the batch layer's Delta tables live: a local folder or an S3 bucket (`[lake]`, `[s3]`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::ObjectStore;

use crate::config::{LakeConfig, S3Config};
use crate::error::Result;

/// A parsed `lake.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LakeLocation {
    /// A folder on the local file system (absolute after parsing).
    Local(PathBuf),
    /// A bucket and key prefix on an S3-compatible server.
    S3 {
        /// The bucket.
        bucket: String,
        /// Key prefix inside the bucket, without leading or trailing `/` (may be empty).
        prefix: String,
    },
}

impl LakeLocation {
    /// Parses `s3://bucket/prefix`, `file:///path` or a plain path (relative to the working
    /// directory).
    ///
    /// ```
    /// use strata_shared::lake::LakeLocation;
    /// assert_eq!(
    ///     LakeLocation::parse("s3://lake/strata/").unwrap(),
    ///     LakeLocation::S3 { bucket: "lake".into(), prefix: "strata".into() }
    /// );
    /// assert!(LakeLocation::parse("gs://x").is_err());
    /// ```
    pub fn parse(url: &str) -> Result<Self, String> {
        if url.is_empty() {
            return Err("must not be empty".into());
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(format!(
                    "{url:?} names no bucket (expected s3://bucket/prefix)"
                ));
            }
            return Ok(LakeLocation::S3 {
                bucket: bucket.into(),
                prefix: prefix.trim_matches('/').into(),
            });
        }
        let path = match url.strip_prefix("file://") {
            Some(p) => PathBuf::from(p),
            None if url.contains("://") => {
                return Err(format!(
                    "{url:?}: only s3:// URLs and local paths are supported"
                ));
            }
            None => PathBuf::from(url),
        };
        let path = if path.is_absolute() {
            path
        } else {
            std::env::current_dir()
                .map_err(|e| e.to_string())?
                .join(path)
        };
        Ok(LakeLocation::Local(path))
    }

    /// The URL of one table under the lake, as deltalake expects it.
    pub fn table_url(&self, table: &str) -> String {
        match self {
            LakeLocation::Local(p) => format!("file://{}", p.join(table).display()),
            LakeLocation::S3 { bucket, prefix } if prefix.is_empty() => {
                format!("s3://{bucket}/{table}")
            }
            LakeLocation::S3 { bucket, prefix } => format!("s3://{bucket}/{prefix}/{table}"),
        }
    }
}

/// Storage options for an S3 lake in the keys deltalake and object_store understand; values
/// not configured are left to the `AWS_*` environment variables.
pub fn s3_options(s3: &S3Config) -> HashMap<String, String> {
    let mut o = HashMap::new();
    o.insert("aws_region".into(), s3.region.clone());
    if let Some(e) = &s3.endpoint {
        o.insert("aws_endpoint".into(), e.clone());
    }
    if s3.allow_http {
        o.insert("aws_allow_http".into(), "true".into());
    }
    if let Some(k) = &s3.access_key_id {
        o.insert("aws_access_key_id".into(), k.clone());
    }
    if let Some(s) = &s3.secret_access_key {
        o.insert("aws_secret_access_key".into(), s.expose().to_owned());
    }
    o
}

/// An object store rooted at the lake (the local folder is created if missing).
pub fn object_store(lake: &LakeConfig, s3: &S3Config) -> Result<Arc<dyn ObjectStore>> {
    match LakeLocation::parse(&lake.url)
        .map_err(|m| crate::error::ConfigError::key("lake.url", m))?
    {
        LakeLocation::Local(path) => {
            std::fs::create_dir_all(&path)?;
            Ok(Arc::new(LocalFileSystem::new_with_prefix(path)?))
        }
        LakeLocation::S3 { bucket, prefix } => {
            let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
            for (k, v) in s3_options(s3) {
                b = b.with_config(k.parse()?, v);
            }
            let store = b.build()?;
            if prefix.is_empty() {
                Ok(Arc::new(store))
            } else {
                Ok(Arc::new(object_store::prefix::PrefixStore::new(
                    store,
                    prefix.as_str(),
                )))
            }
        }
    }
}
