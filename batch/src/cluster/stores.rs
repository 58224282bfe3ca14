//! The object stores of a Ballista process: every `s3://bucket` a plan names is reached with the
//! process's own `[s3]` settings (endpoint, region, credentials), and `file://` paths on the local
//! disk. Plans carry file URLs only, never credentials, so the scheduler and each executor read
//! the lake the way their own configuration says.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use datafusion::error::{DataFusionError, Result};
use datafusion::execution::object_store::ObjectStoreRegistry;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::ObjectStore;
use strata_shared::config::S3Config;
use url::Url;

/// An [`ObjectStoreRegistry`] that builds the store of an `s3://` bucket on first use.
#[derive(Debug)]
pub struct LakeStores {
    s3: S3Config,
    stores: RwLock<HashMap<String, Arc<dyn ObjectStore>>>,
}

impl LakeStores {
    /// A registry reaching S3 buckets as `s3` says.
    pub fn new(s3: S3Config) -> Self {
        Self {
            s3,
            stores: RwLock::new(HashMap::new()),
        }
    }

    fn build(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        match url.scheme() {
            "file" | "" => Ok(Arc::new(LocalFileSystem::new())),
            "s3" => {
                let bucket = url.host_str().ok_or_else(|| {
                    DataFusionError::Configuration(format!("{url} names no bucket"))
                })?;
                let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
                for (k, v) in strata_shared::lake::s3_options(&self.s3) {
                    let key = k
                        .parse()
                        .map_err(|e| DataFusionError::External(Box::new(e)))?;
                    b = b.with_config(key, v);
                }
                Ok(Arc::new(
                    b.build()
                        .map_err(|e| DataFusionError::External(Box::new(e)))?,
                ))
            }
            other => Err(DataFusionError::Configuration(format!(
                "{url}: the lake is on s3:// or a local folder, not {other}://"
            ))),
        }
    }
}

/// `scheme://host`, the key a store is kept under.
fn key(url: &Url) -> String {
    format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""))
}

impl ObjectStoreRegistry for LakeStores {
    fn register_store(
        &self,
        url: &Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        let mut stores = self.stores.write().unwrap_or_else(|p| p.into_inner());
        stores.insert(key(url), store)
    }

    fn deregister_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        let mut stores = self.stores.write().unwrap_or_else(|p| p.into_inner());
        stores
            .remove(&key(url))
            .ok_or_else(|| DataFusionError::Internal(format!("no store registered for {url}")))
    }

    fn get_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        let k = key(url);
        if let Some(s) = self
            .stores
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&k)
        {
            return Ok(Arc::clone(s));
        }
        let store = self.build(url)?;
        let mut stores = self.stores.write().unwrap_or_else(|p| p.into_inner());
        Ok(Arc::clone(stores.entry(k).or_insert(store)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_store_per_bucket_and_local_files() {
        let r = LakeStores::new(S3Config {
            endpoint: Some("http://127.0.0.1:1".into()),
            allow_http: true,
            ..Default::default()
        });
        let a = r
            .get_store(&Url::parse("s3://lake/x/y.parquet").unwrap())
            .unwrap();
        let b = r
            .get_store(&Url::parse("s3://lake/other").unwrap())
            .unwrap();
        assert!(Arc::ptr_eq(&a, &b), "a bucket's store is built once");
        let c = r.get_store(&Url::parse("s3://archive/z").unwrap()).unwrap();
        assert!(!Arc::ptr_eq(&a, &c), "another bucket, another store");
        r.get_store(&Url::parse("file:///tmp/x").unwrap()).unwrap();
        let e = r
            .get_store(&Url::parse("gs://b/x").unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("gs://"), "{e}");
    }
}
