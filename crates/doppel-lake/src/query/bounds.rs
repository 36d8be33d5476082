//! What keeps a running query stoppable: a yield point between every pair of operators, and
//! a bound on the row pairs a join without an equality condition may compare.
//!
//! A query stops (its time limit, or its client gone) only where it yields to the runtime.
//! DataFusion's sources yield every so many batches, but an operator that makes many batches
//! from one input batch (a join, an unnest) runs on between those; wrapping every operator's
//! output makes each batch anywhere in the plan count. A nested-loop or cross join, though,
//! can compare rows for minutes without producing a batch at all, so such a join is refused
//! before it runs when its inputs hold more pairs than the limit.

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::Result as DfResult;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::joins::{CrossJoinExec, NestedLoopJoinExec};
use datafusion::physical_plan::{
    ChildrenPropertiesMode, ExecutionPlan, ReplaceChildrenOptions, StatisticsArgs,
    StatisticsContext,
};

use crate::error::{LakeError, Result};

/// The physical optimizer rule that puts a yield point on every edge of the plan.
#[derive(Debug)]
pub struct YieldBetweenOperators;

impl PhysicalOptimizerRule for YieldBetweenOperators {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let wrapped = plan.transform_up(|node| {
            if node.children().is_empty() || node.is::<CooperativeExec>() {
                return Ok(Transformed::no(node));
            }
            let children = node
                .children()
                .into_iter()
                .map(|child| {
                    if child.is::<CooperativeExec>() {
                        child.clone()
                    } else {
                        Arc::new(CooperativeExec::new(child.clone())) as Arc<dyn ExecutionPlan>
                    }
                })
                .collect();
            // The wrappers keep their inputs' properties (partitioning, order).
            let keep = ReplaceChildrenOptions::new(ChildrenPropertiesMode::Keep);
            Ok(Transformed::yes(node.replace_children(children, keep)?))
        })?;
        // The root's output too: the collecting loop polls it.
        Ok(Arc::new(CooperativeExec::new(wrapped.data)))
    }

    fn name(&self) -> &str {
        "yield_between_operators"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Refuses a plan with a nested-loop or cross join whose inputs hold more than `max_pairs`
/// row pairs (from the inputs' row counts; an input of unknown size is let through).
pub fn check_joins(plan: &Arc<dyn ExecutionPlan>, max_pairs: u64) -> Result<()> {
    let mut refused = None;
    let statistics = StatisticsContext::new();
    plan.apply(|node| {
        if !(node.is::<NestedLoopJoinExec>() || node.is::<CrossJoinExec>()) {
            return Ok(TreeNodeRecursion::Continue);
        }
        let mut pairs: u64 = 1;
        for child in node.children() {
            let rows = statistics
                .compute(child.as_ref(), &StatisticsArgs::new())?
                .num_rows;
            match rows.get_value() {
                Some(&rows) => pairs = pairs.saturating_mul(rows as u64),
                None => return Ok(TreeNodeRecursion::Continue),
            }
        }
        if pairs > max_pairs {
            refused = Some(pairs);
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    match refused {
        None => Ok(()),
        Some(pairs) => Err(LakeError::QueryLimit(format!(
            "a join without an equality condition would compare {pairs} row pairs; the limit is \
             {max_pairs}: join on a column (`a.asset = b.asset`) or a time bucket, or narrow the \
             inputs with WHERE"
        ))),
    }
}
