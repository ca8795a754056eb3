//! Exact arithmetic: no silently wrapped sums or products.
//!
//! DataFusion's integer `+`, `-` and `*` use Arrow's wrapping kernels, and its `sum` adds in
//! the input's type with wrapping additions (`sum` of `UInt64` values is a `UInt64` that wraps
//! modulo 2^64; `sum` of `Decimal128` values an `i128` that wraps past about 1.7·10^38), and
//! no configuration of DataFusion 55 changes that. Two analyzer rules, added to every query's
//! session, make every answer exact or an error:
//!
//! - [`WidenSums`] rewrites `sum(x)` of an integer `x` (any width, signed or not) to
//!   `sum(CAST(x AS DECIMAL(38, 0)))`: the result is a `Decimal128(38, 0)` that holds the exact
//!   sum (it could only wrap after 10^19 rows). `sum(x)` of a `Decimal128(p, s)` is
//!   DataFusion's usual `Decimal128(min(38, p + 10), s)`, added in `i128` with checked
//!   additions by the aggregate function `exact_sum` (`sum(DISTINCT x)` and window sums: as a
//!   `Decimal256(76, s)`, cast back): a sum that does not fit is an error, not a wrapped value.
//!   Aggregates and window aggregates are both rewritten; the output column keeps its name.
//! - [`CheckedArithmetic`] replaces integer `a + b`, `a - b` and `a * b` with functions that
//!   use Arrow's checked kernels: an overflow is an error naming the expression, for example
//!   `integer overflow in CAST(... AS UInt64) + CAST(... AS UInt64): Arithmetic overflow:
//!   Overflow happened on: 18446744073709551615 + 1`. Decimal arithmetic is already checked by
//!   Arrow.
//!
//! Not covered: `avg` of integers is a `Float64` (approximate, but not wrapped); unary minus of
//! the smallest integer wraps; expressions of correlated subqueries whose type cannot be
//! resolved on their own are left as they are.

use std::sync::Arc;

use arrow::compute::kernels::numeric;
use arrow::datatypes::{DECIMAL128_MAX_PRECISION, DECIMAL256_MAX_PRECISION, DataType};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, Result};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::expr::{AggregateFunction, WindowFunction};
use datafusion::logical_expr::utils::merge_schema;
use datafusion::logical_expr::{
    Aggregate, AggregateUDF, BinaryExpr, ColumnarValue, Expr, ExprSchemable, LogicalPlan, Operator,
    Projection, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
    WindowFunctionDefinition, cast,
};
use datafusion::optimizer::AnalyzerRule;
use datafusion::physical_expr_common::datum::apply;

/// The analyzer rule that widens sums; see the module docs.
#[derive(Debug, Default)]
pub struct WidenSums;

/// The analyzer rule that makes integer `+`, `-` and `*` fail on overflow; see the module
/// docs.
#[derive(Debug, Default)]
pub struct CheckedArithmetic;

/// How a sum's argument is widened.
enum Widening {
    /// An integer: summed as `Decimal128(38, 0)`, which is the result.
    Integer,
    /// A `Decimal128(p, s)`: summed as `Decimal256(76, s)`, then cast to this type.
    Decimal(DataType),
    /// A `Decimal128(p, s)` summed by `exact_sum` in its own type: nothing to cast back.
    Exact,
}

fn widening(argument: &DataType) -> Option<(DataType, Widening)> {
    match argument {
        argument if argument.is_integer() => Some((
            DataType::Decimal128(DECIMAL128_MAX_PRECISION, 0),
            Widening::Integer,
        )),
        DataType::Decimal128(precision, scale) => Some((
            DataType::Decimal256(DECIMAL256_MAX_PRECISION, *scale),
            Widening::Decimal(DataType::Decimal128(
                DECIMAL128_MAX_PRECISION.min(precision.saturating_add(10)),
                *scale,
            )),
        )),
        _ => None,
    }
}

/// `sum(x)` with `x` widened, if `expr` (under any alias) is a sum that needs it; with the type
/// to cast its result back to, for decimals.
fn widen_sum(expr: &Expr, schema: &DFSchema) -> Result<Option<(Expr, Option<DataType>)>> {
    let inner = match expr {
        Expr::Alias(alias) => alias.expr.as_ref(),
        other => other,
    };
    let widened = match inner {
        Expr::AggregateFunction(AggregateFunction { func, params })
            if func.name() == "sum" && params.args.len() == 1 =>
        {
            let Ok(argument) = params.args[0].get_type(schema) else {
                return Ok(None);
            };
            if matches!(argument, DataType::Decimal128(..)) && !params.distinct {
                // Summed in i128 with checked additions: the answer has DataFusion's type.
                let call = Expr::AggregateFunction(AggregateFunction {
                    func: crate::exact_sum::ExactSum::udaf(),
                    params: params.clone(),
                });
                (call, Widening::Exact)
            } else {
                let Some((wide, widening)) = widening(&argument) else {
                    return Ok(None);
                };
                let mut params = params.clone();
                params.args = vec![cast(params.args[0].clone(), wide)];
                let call = Expr::AggregateFunction(AggregateFunction {
                    func: func.clone(),
                    params,
                });
                (call, widening)
            }
        }
        Expr::WindowFunction(window) => {
            let WindowFunction { fun, params } = window.as_ref();
            let WindowFunctionDefinition::AggregateUDF(func) = fun else {
                return Ok(None);
            };
            if func.name() != "sum" || params.args.len() != 1 {
                return Ok(None);
            }
            let Ok(argument) = params.args[0].get_type(schema) else {
                return Ok(None);
            };
            let Some((wide, widening)) = widening(&argument) else {
                return Ok(None);
            };
            let mut params = params.clone();
            params.args = vec![cast(params.args[0].clone(), wide)];
            let call = Expr::WindowFunction(Box::new(WindowFunction {
                fun: fun.clone(),
                params,
            }));
            (call, widening)
        }
        _ => return Ok(None),
    };
    let (call, widening) = widened;
    // The output column keeps the name it had.
    let named = match expr {
        Expr::Alias(alias) => call.alias_qualified(alias.relation.clone(), alias.name.clone()),
        other => call.alias(other.schema_name().to_string()),
    };
    Ok(Some((
        named,
        match widening {
            Widening::Integer | Widening::Exact => None,
            Widening::Decimal(back) => Some(back),
        },
    )))
}

/// Rewrites the sums of one aggregate or window node; a projection above casts decimal sums
/// back to their usual type.
fn widen_node(plan: LogicalPlan) -> Result<Transformed<LogicalPlan>> {
    let (exprs, input, group) = match &plan {
        LogicalPlan::Aggregate(aggregate) => (
            aggregate.aggr_expr.clone(),
            aggregate.input.clone(),
            Some(aggregate.group_expr.clone()),
        ),
        LogicalPlan::Window(window) => (window.window_expr.clone(), window.input.clone(), None),
        _ => return Ok(Transformed::no(plan)),
    };
    let schema = input.schema();
    let mut changed = false;
    let mut casts: Vec<Option<DataType>> = Vec::with_capacity(exprs.len());
    let mut new_exprs = Vec::with_capacity(exprs.len());
    for expr in exprs {
        match widen_sum(&expr, schema)? {
            Some((widened, back)) => {
                changed = true;
                new_exprs.push(widened);
                casts.push(back);
            }
            None => {
                new_exprs.push(expr);
                casts.push(None);
            }
        }
    }
    if !changed {
        return Ok(Transformed::no(plan));
    }
    let node = match group {
        Some(group) => LogicalPlan::Aggregate(Aggregate::try_new(input, group, new_exprs)?),
        None => LogicalPlan::Window(datafusion::logical_expr::Window::try_new(new_exprs, input)?),
    };
    if casts.iter().all(Option::is_none) {
        return Ok(Transformed::yes(node));
    }
    // The node's own columns come last, after the group (or input) columns.
    let fields = node.schema().columns();
    let first = fields.len() - casts.len();
    let projection = fields
        .into_iter()
        .enumerate()
        .map(|(position, column)| {
            let back = position
                .checked_sub(first)
                .and_then(|own| casts.get(own).cloned().flatten());
            match back {
                Some(back) => cast(Expr::Column(column.clone()), back)
                    .alias_qualified(column.relation.clone(), column.name.clone()),
                None => Expr::Column(column),
            }
        })
        .collect::<Vec<Expr>>();
    Ok(Transformed::yes(LogicalPlan::Projection(
        Projection::try_new(projection, Arc::new(node))?,
    )))
}

impl AnalyzerRule for WidenSums {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        plan.transform_up_with_subqueries(|node| {
            let rewritten = widen_node(node)?;
            if rewritten.transformed {
                Ok(rewritten)
            } else {
                // The types below may have changed: recompute this node's schema.
                let data = rewritten.data.recompute_schema()?;
                Ok(Transformed::yes(data))
            }
        })
        .map(|rewritten| rewritten.data)
    }

    fn name(&self) -> &str {
        "chunk_query_widen_sums"
    }
}

impl AnalyzerRule for CheckedArithmetic {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        plan.transform_up_with_subqueries(|node| {
            let mut schema = merge_schema(&node.inputs());
            if let LogicalPlan::TableScan(scan) = &node {
                let source = DFSchema::try_from_qualified_schema(
                    scan.table_name.clone(),
                    &scan.source.schema(),
                )?;
                schema.merge(&source);
            }
            let rewritten =
                node.map_expressions(|expr| expr.transform_up(|expr| checked(expr, &schema)))?;
            if rewritten.transformed {
                rewritten.map_data(LogicalPlan::recompute_schema)
            } else {
                Ok(rewritten)
            }
        })
        .map(|rewritten| rewritten.data)
    }

    fn name(&self) -> &str {
        "chunk_query_checked_arithmetic"
    }
}

/// The checked `+`, `-` and `*` as functions to find by name (`checked_add`, `checked_sub`,
/// `checked_mul`), for a process that runs plan fragments planned elsewhere: a plan codec that
/// sends a scalar function by its name alone (as datafusion-distributed's does) is decoded with
/// these. Their overflow errors name the operator, not the expression it replaced.
pub fn checked_functions() -> Vec<Arc<ScalarUDF>> {
    [Operator::Plus, Operator::Minus, Operator::Multiply]
        .into_iter()
        .map(|op| {
            Arc::new(ScalarUDF::new_from_impl(CheckedOp {
                op,
                expression: format!("integer {op} (a plan fragment run for another worker)"),
                signature: Signature::any(2, Volatility::Immutable),
            }))
        })
        .collect()
}

/// The exact `sum` of decimals (the aggregate function `exact_sum`), for a process that
/// runs plan fragments planned elsewhere: [`WidenSums`] puts it in plans, and a plan codec
/// that sends an aggregate function by its name alone finds it with this.
pub fn checked_aggregates() -> Vec<Arc<AggregateUDF>> {
    vec![crate::exact_sum::ExactSum::udaf()]
}

/// `a op b` as a checked function call, if it is integer `+`, `-` or `*`.
fn checked(expr: Expr, schema: &DFSchema) -> Result<Transformed<Expr>> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = &expr else {
        return Ok(Transformed::no(expr));
    };
    if !matches!(op, Operator::Plus | Operator::Minus | Operator::Multiply) {
        return Ok(Transformed::no(expr));
    }
    let (Ok(left_type), Ok(right_type)) = (left.get_type(schema), right.get_type(schema)) else {
        return Ok(Transformed::no(expr));
    };
    if !left_type.is_integer() || left_type != right_type {
        return Ok(Transformed::no(expr));
    }
    let function = CheckedOp {
        op: *op,
        expression: expr.to_string(),
        signature: Signature::any(2, Volatility::Immutable),
    };
    let call = ScalarUDF::new_from_impl(function).call(vec![(**left).clone(), (**right).clone()]);
    Ok(Transformed::yes(call))
}

/// Integer `+`, `-` or `*` that fails on overflow.
#[derive(Debug, PartialEq, Eq, Hash)]
struct CheckedOp {
    op: Operator,
    /// The expression it replaces, for errors.
    expression: String,
    signature: Signature,
}

impl ScalarUDFImpl for CheckedOp {
    fn name(&self) -> &str {
        match self.op {
            Operator::Plus => "checked_add",
            Operator::Minus => "checked_sub",
            _ => "checked_mul",
        }
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        // The name of the expression it replaces, so output columns keep their names.
        match args {
            [left, right] => Ok(format!(
                "{} {} {}",
                left.schema_name(),
                self.op,
                right.schema_name()
            )),
            _ => Ok(self.expression.clone()),
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        arg_types.first().cloned().ok_or_else(|| {
            DataFusionError::Internal(format!("{} takes two arguments", self.name()))
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [left, right] = args.args.as_slice() else {
            return Err(DataFusionError::Internal(format!(
                "{} takes two arguments",
                self.name()
            )));
        };
        let result = match self.op {
            Operator::Plus => apply(left, right, numeric::add),
            Operator::Minus => apply(left, right, numeric::sub),
            _ => apply(left, right, numeric::mul),
        };
        result.map_err(|error| {
            DataFusionError::Execution(format!(
                "integer overflow in {}: {}",
                self.expression,
                error.strip_backtrace()
            ))
        })
    }
}
