//! Marks targets whose cores have the ARMv7E-M DSP extension (Cortex-M4, M7), so the
//! `arm` kernels may use `SMLAD` and `SXTB16`. Target features cannot tell on stable
//! Rust (ARM's are unstable), the target name can.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rustc-check-cfg=cfg(soft_arm_dsp)");
    let target = std::env::var("TARGET").unwrap_or_default();
    if target.starts_with("thumbv7em") {
        println!("cargo::rustc-cfg=soft_arm_dsp");
    }
}
