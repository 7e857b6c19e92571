//! With the `torch` feature: an rpath to libtorch for this crate's own tests, and the folder
//! passed on to dependents (see `links` in Cargo.toml), whose build scripts add the same rpath.
fn main() {
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        println!("cargo:libtorch_lib={dir}");
    }
}
