//! What goes over the wire between hamlet's servers and its clients, as
//! pure code without I/O: the SPAMC/SPAMD format ([`spamd`]) and the JSON
//! replies of the HTTP API ([`reply`]), zstd request bodies ([`zstd`]). The listeners and the clients both
//! build on these, so neither depends on the other.

pub mod milter;
pub mod reply;
pub mod spamd;
pub mod zstd;
