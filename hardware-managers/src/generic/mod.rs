//! The generic hardware manager: what works on any Linux machine.
