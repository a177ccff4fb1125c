//! Everything specific to the MPS2 AN386 board as QEMU models it: its UART. Porting the
//! firmware to another Cortex-M4F board means replacing this file (and `memory.x`) with
//! the board's HAL: any UART implementing `embedded_io::Write` fits `report`.
//! The clock is SysTick, part of every Cortex-M core, so it needs no porting.

use core::convert::Infallible;
use core::ptr::{read_volatile, write_volatile};

/// The CMSDK APB UART0 of the MPS2 FPGA images.
const UART0: usize = 0x4000_4000;
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
