//! The work behind the model commands, separate from argument parsing so that tests and
//! other front ends can call it: [`train`] (`thau train`, `thau eval`), [`grow`]
//! (`thau grow`), [`ages`] (`thau model ages`), [`memory`] (`thau memory`), [`learn`]
//! (`thau learn`), [`chat`] (`thau chat`), [`stats`] (`thau stats --plot`) and [`tune`] (`thau feedback`,
//! `thau tune`).

pub mod ages;
pub mod chat;
pub mod grow;
pub mod learn;
pub mod memory;
pub mod stats;
pub mod train;
pub mod tune;
