//! Generates the KEDA external-scaler messages and the server side of its service from
//! `proto/externalscaler.proto` (prost and tonic's generator), with the protoc that
//! protoc-bin-vendored ships: building wfe needs no protoc installed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .compile_with_config(config, &["proto/externalscaler.proto"], &["proto"])?;
    Ok(())
}
