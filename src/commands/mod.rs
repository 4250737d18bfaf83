//! The work behind the model commands, separate from argument parsing so that tests and
//! other front ends can call it: [`train`] (`thau train`, `thau eval`), [`grow`]
//! (`thau grow`) and [`ages`] (`thau model ages`).

pub mod ages;
pub mod grow;
pub mod learn;
pub mod memory;
pub mod train;
