//! The device's whole RAM use, not only the arena: the statics (`.data`, `.bss`, which
//! hold the arena) from the linker's symbols, and the stack's high-water mark. The
//! stack is painted with a pattern at start; after the run, the lowest word that no
//! longer holds it shows how deep the stack went.

/// What unused stack holds until something writes it.
const PAINT: u32 = 0x5afe_57ac;

/// Words left unpainted below the painting function's own stack pointer.
const MARGIN_WORDS: usize = 16;

extern "C" {
    // cortex-m-rt's linker script: start of `.data` (RAM's first byte here), end of the
    // statics (where the stack may grow down to), and the stack's top.
    static __sdata: u32;
    static __sheap: u32;
    static _stack_start: u32;
}

/// The statics' first address, their end, and the stack's top.
fn bounds() -> (usize, usize, usize) {
    // Only the symbols' addresses are taken, never their contents.
    (
        core::ptr::addr_of!(__sdata) as usize,
        core::ptr::addr_of!(__sheap) as usize,
        core::ptr::addr_of!(_stack_start) as usize,
    )
}

/// Fills the unused stack, from the end of the statics up to a little below the
/// current stack pointer, with [`PAINT`]. Call first thing in `main`; calling it again
/// later repaints below the caller's frame, so the mark counts from there on.
#[inline(never)]
pub fn paint() {
    let (_, bottom, _) = bounds();
    let top = cortex_m::register::msp::read() as usize - 4 * MARGIN_WORDS;
    let mut at = bottom;
    while at < top {
        // SAFETY: `at` is word-aligned (the linker aligns `__sheap` to 4) and lies
        // between the end of the statics and below this function's own frame: memory
        // the linker script reserves for the stack and that no live frame uses yet, so
        // nothing else reads or references it. Volatile, so the writes are not elided.
        unsafe { core::ptr::write_volatile(at as *mut u32, PAINT) };
        at += 4;
    }
}

/// Bytes of statics and the stack's high-water mark in bytes.
pub fn usage() -> (usize, usize) {
    let (start, bottom, top) = bounds();
    let mut at = bottom;
    // SAFETY: reads words between the end of the statics and the stack's top, all RAM
    // the linker reserved; volatile, since they were written behind the compiler's back.
    while at < top && unsafe { core::ptr::read_volatile(at as *const u32) } == PAINT {
        at += 4;
    }
    (bottom - start, top - at)
}
