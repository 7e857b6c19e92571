//! The build script of every crate whose test binaries link libtorch through wfe-neural
//! (anomaly, fingerprint, forecast, tier-select; each names this file as `build` in its
//! Cargo.toml): an rpath to the folder wfe-neural reports (see `links` in
//! pipeline/neural/Cargo.toml), so they find libtorch at run time without LD_LIBRARY_PATH.
//! Without the `torch` feature nothing is reported and nothing is added.
fn main() {
    if let Ok(dir) = std::env::var("DEP_WFE_NEURAL_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
