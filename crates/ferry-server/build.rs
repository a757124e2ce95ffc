//! Rebuilds the server when the console's pages change: they are embedded with `include_dir!`, which
//! Cargo does not track by itself (a new or edited file under `console/` would otherwise be missed).

fn main() {
    println!("cargo:rerun-if-changed=console");
}
