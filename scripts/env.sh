# Shared settings for Kiln's scripts (sourced, not run).
# One persistent target dir outside the clone, so every clone and CI run reuses Burn's build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/kiln-target}"
# Two cores here: more jobs only thrash.
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
# Burn's default device (used when loading optimizer state) must not demand a GPU.
export BURN_DEVICE="${BURN_DEVICE:-flex}"
# wgpu on a software adapter: keep autotuning short (see ARCHITECTURE.md, "Devices").
export CUBECL_AUTOTUNE_LEVEL="${CUBECL_AUTOTUNE_LEVEL:-minimal}"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/kiln-xdg}"
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
# wasm-bindgen must match the version pinned in Cargo.lock exactly.
export KILN_WASM_BINDGEN_VERSION=0.2.130
export PATH="$HOME/.cargo/bin:$PATH"
