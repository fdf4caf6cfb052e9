//! The SPLAI agent protocol (being written).
