//! The autonomy layer: agents that act on the plant, every one tried in the twin first.
//!
//! - [`objective`]: a policy file, the reward and the hard safety limits in doppel's one rule
//!   language, and the quantities they read from a plant at each step;
//! - [`mpc`]: model-predictive control, shooting over the simulator from the state the
//!   estimator finds in the policy's own recent readings: the strong, expensive reference;
//! - [`maintenance`]: the maintenance planner, a mixed-integer program over crew, kits and
//!   the wear the estimator finds;
//! - [`grpo`]: the learned policy, a small network trained with GRPO on the policy file's
//!   rewards after a cold start imitating the rule-based operator;
//! - [`shield`]: the safety gate every action of a policy passes on a short look-ahead;
//! - [`supervise`]: a policy at work on the live plant, in shadow, recommend, approve or
//!   auto mode, its proposals with their simulated effect;
//! - [`catalog`]: policies chosen by name (`none`, `rules`, `mpc`, `maintenance`), wherever a policy is taken;
//! - [`evaluate`]: policies compared on scenarios and seeds, with what each costs.
//!
//! Policies see readings, never the simulator's truth: what they know of hidden wear or
//! fouling comes from the state estimator. This crate never touches the lake or the network.

pub mod catalog;
pub mod error;
pub mod evaluate;
pub mod grpo;
pub mod lookahead;
pub mod maintenance;
pub mod mpc;
pub mod objective;
pub mod shield;
pub mod supervise;

pub use catalog::policy_by_name;
pub use error::AutonomyError;
pub use objective::Objective;
