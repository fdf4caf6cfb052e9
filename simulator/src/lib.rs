//! The SPLAI simulator (being written).
