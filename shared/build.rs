//! Compiles `proto/metric_event.proto` with prost. protoc comes from the `protoc-bin-vendored`
//! crate, so a fresh machine needs no system protobuf compiler.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    // Tags become a BTreeMap: sorted keys are what series identity needs.
    config.btree_map(["."]);
    config.compile_protos(&["proto/metric_event.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/metric_event.proto");
    Ok(())
}
