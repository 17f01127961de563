//! Replication: copying artifacts between this registry and others, byte for byte.
//!
//! Registries and rules are managed through [`Replication`] ([`spec`]); a rule's
//! executions are started by a manual run or by the outbox's events (their tasks written
//! in the fan-out's transaction, so a push acknowledged is a push replicated); the
//! executor ([`service`]) works their tasks, one node per rule at a time, each task the
//! copy of one artifact with all it references, to the other registry ([`copy`]) or from
//! it ([`pull`]). Rules with a schedule (cron) also run on it.

pub mod copy;
pub mod pull;
pub mod service;
pub mod spec;
pub mod views;

pub use copy::{Copied, Copier};
pub use service::Replication;
pub use spec::{RegistrySpec, RegistryView, RuleOptions, RuleSpec, RuleView};
pub use views::{ExecutionView, TaskView};
