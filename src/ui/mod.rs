//! What the user sees: one [`Printer`] for every line (stage lines, the live
//! board of stages in progress, notes, warnings, errors, results), and the
//! tables results are printed as. Nothing else in berth writes to stdout or
//! stderr; logs go through `tracing`, above the board.

pub mod printer;
pub mod table;

pub use printer::{Colour, LogWriter, Printer, Status, Verbosity};
pub use table::table;
