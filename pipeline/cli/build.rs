//! With libtorch (the `torch` feature), the `wfe` binary and the tests find it through an rpath:
//! wfe-neural reports its folder (see `links` in pipeline/neural/Cargo.toml).
//!
//! With `cuda` as well, the binary keeps libtorch_cuda linked: nothing references it by
//! symbol, so the linker would drop it and libtorch would then see no GPU (../shared/GPU.md).
fn main() {
    let Ok(dir) = std::env::var("DEP_WFE_NEURAL_LIBTORCH_LIB") else {
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        if std::path::Path::new(&dir).join("libtorch_cuda.so").exists() {
            println!("cargo:rustc-link-arg-bins=-Wl,--no-as-needed");
            println!("cargo:rustc-link-arg-bins=-ltorch_cuda");
            println!("cargo:rustc-link-arg-bins=-Wl,--as-needed");
        } else {
            println!(
                "cargo:warning=feature `cuda`: no libtorch_cuda.so in {dir} (a CPU-only PyTorch?)"
            );
        }
    }
}
