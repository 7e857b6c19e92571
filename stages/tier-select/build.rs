//! With libtorch (the `torch` feature), this crate's test binaries find it through an rpath:
//! wfe-neural reports its folder (see `links` in pipeline/neural/Cargo.toml).
fn main() {
    if let Ok(dir) = std::env::var("DEP_WFE_NEURAL_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
