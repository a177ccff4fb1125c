//! Marks targets whose cores have the DSP extension, so the `arm` kernels may use `SMLAD`
//! and `SXTB16`: every ARMv7E-M core (Cortex-M4, M7; the target name says so), and
//! ARMv8-M Mainline (Cortex-M33, M55), where the extension is optional, when the build
//! asks for it with `-C target-feature=+dsp`. `cfg(target_feature)` cannot tell on stable
//! Rust (ARM's features are unstable), the target name and the flags can.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
    println!("cargo::rustc-check-cfg=cfg(soft_arm_dsp)");
    let target = std::env::var("TARGET").unwrap_or_default();
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let asks_dsp = flags
        .split('\x1f')
        .flat_map(|f| f.split(','))
        .any(|f| f.trim_start_matches("target-feature=") == "+dsp");
    if target.starts_with("thumbv7em") || (target.starts_with("thumbv8m.main") && asks_dsp) {
        println!("cargo::rustc-cfg=soft_arm_dsp");
    }
}
