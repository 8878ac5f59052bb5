//! Ferry's pipeline engine (what Spinnaker calls Orca): executes the stage DAG of each run,
//! durably. See [`engine`] for the commit-then-act rule that makes it crash-safe, [`stage`] for
//! the contract every stage type implements, [`registry`] for how stage types are plugged in,
//! [`validate`] for whole-pipeline validation and [`conformance`] for the test kit every stage
//! type passes.
//!
//! The engine knows no HTTP, SQL or stage-specific dependency: stages arrive through the
//! [`Registry`], durable state through the `ferry_core::Store` trait.

pub mod conformance;
pub mod engine;
pub mod expr;
pub mod registry;
pub mod stage;
pub mod validate;
pub mod window;

pub use engine::{
    Command, CommandError, Engine, EngineConfig, EngineError, EngineHandle, EngineStats,
    ExecutionEvent, RunRequest,
};
pub use registry::Registry;
pub use stage::{StageCtx, StageError, StageType, Step, Typed, TypedStage, ValidateOnly};
pub use validate::validate_pipeline;

#[cfg(test)]
mod tests;
