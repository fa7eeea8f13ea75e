//! The engine: the state every subsystem shares (metadata, packs, chunker, pins, policy, free
//! space), each part behind its own methods.

pub(crate) mod space;
