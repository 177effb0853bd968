//! End-to-end tests: the real `kiln` binary, real files, real training.

mod cluster;
mod control;
mod coordinators;
mod datasets;
mod ddp;
mod demo;
mod import;
mod netns;
mod support;
mod train_cli;
