//! kiln-web
