//! Everything specific to the MPS2 boards as QEMU models them: their UART. AN386
//! (Cortex-M4F) and AN505 (Cortex-M33, `cfg(mps2_an505)`) have the same CMSDK UART at
//! different addresses. Porting the firmware to another board means replacing this file
//! (and the memory map) with the board's HAL: any UART implementing `embedded_io::Write`
//! fits (`boards/nrf52840-dk` does that). The clock is SysTick, part of every Cortex-M
//! core, so it needs no porting.

use core::convert::Infallible;
use core::ptr::{read_volatile, write_volatile};

/// The CMSDK APB UART0 of the MPS2 FPGA images: on the AN505 behind a peripheral
/// protection controller, reached at its Secure alias (the core runs Secure).
#[cfg(not(mps2_an505))]
const UART0: usize = 0x4000_4000;
#[cfg(mps2_an505)]
const UART0: usize = 0x5020_0000;
const DATA: usize = 0x000;
const STATE: usize = 0x004;
const CTRL: usize = 0x008;
const BAUDDIV: usize = 0x010;
const STATE_TX_FULL: u32 = 1;
const CTRL_TX_ENABLE: u32 = 1;

/// The board's UART0, transmit only.
pub struct Uart(());

impl Uart {
    /// Enables the transmitter. Call once: this is the only handle to UART0.
    pub fn take() -> Uart {
        // SAFETY: UART0's registers are device memory at a fixed address on this board;
        // volatile word writes are how the peripheral is driven, and this firmware has no
        // other code touching it.
        unsafe {
            // The smallest divider the CMSDK UART accepts; QEMU ignores the baud rate.
            write_volatile((UART0 + BAUDDIV) as *mut u32, 16);
            write_volatile((UART0 + CTRL) as *mut u32, CTRL_TX_ENABLE);
        }
        Uart(())
    }
}

impl embedded_io::ErrorType for Uart {
    type Error = Infallible;
}

impl embedded_io::Write for Uart {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        for &byte in buf {
            // SAFETY: as in `take`: volatile accesses to UART0's STATE and DATA registers.
            unsafe {
                while read_volatile((UART0 + STATE) as *const u32) & STATE_TX_FULL != 0 {}
                write_volatile((UART0 + DATA) as *mut u32, u32::from(byte));
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
}
