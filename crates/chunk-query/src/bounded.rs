//! Bounded expressions: no single function call can build a value big enough to take the
//! process down.
//!
//! A handful of SQL functions build values much larger than their inputs: `repeat('x',
//! 1500000000)` is a 1.5 GB string built from a 1-byte one, and DataFusion evaluates such a
//! call on literals while planning (constant folding), before any memory limit applies. Every
//! session of the engine replaces these functions with [`BoundedFunction`] wrappers that work
//! out, from their arguments and before calling the real function, an upper bound of the bytes
//! the call builds (for one batch of rows: every row's value together), and refuse the call if
//! it is over [`QueryConfig::max_expression_bytes`](crate::QueryConfig::max_expression_bytes)
//! (256 MiB by default). The [`BoundedExpressions`] optimizer rule turns a refused call on
//! literals into a planning error naming the expression, so such a query is refused before it
//! downloads anything; a call whose arguments come from the data is refused when it runs.
//!
//! | function | bound of one row's value |
//! | --- | --- |
//! | `repeat(s, n)` | `len(s) * n` bytes |
//! | `lpad(s, n [, fill])`, `rpad(...)` | `4 * n` bytes (`n` characters of up to 4 bytes) |
//! | `replace(s, from, to)` | `len(s) + (len(s) / len(from) + 1) * len(to)` bytes |
//! | `concat(...)`, `concat_ws(sep, ...)` | the sum of the arguments' lengths (and separators) |
//! | `array_repeat(x, n)` | `size(x) * n` |
//! | `array_resize(a, n [, x])` | `size(x or a's element) * n` |
//! | `range(...)`, `generate_series(...)` of integers | 8 bytes per element |
//!
//! A refused call with literal counts and non-literal values (`repeat(hash, 1000000000)`) is
//! refused at planning too when the count alone is over the limit. Not covered: `range` of
//! dates or timestamps, `regexp_replace`, and the `||` operator (bounded by its inputs, which
//! are themselves bounded).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array};
use arrow::datatypes::{DataType, FieldRef};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Result, ScalarValue};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::interval_arithmetic::Interval;
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ExpressionPlacement, LogicalPlan, ReturnFieldArgs,
    ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

/// The functions wrapped, by their DataFusion names (their aliases follow them).
pub(crate) const GUARDED: [&str; 10] = [
    "repeat",
    "lpad",
    "rpad",
    "replace",
    "concat",
    "concat_ws",
    "array_repeat",
    "array_resize",
    "range",
    "generate_series",
];

/// Replaces the guarded functions among `functions` with [`BoundedFunction`]s of this limit.
pub(crate) fn bound_functions(functions: &mut [Arc<ScalarUDF>], limit: usize) {
    for function in functions.iter_mut() {
        if GUARDED.contains(&function.name()) {
            let bounded = BoundedFunction::new(function.as_ref().clone(), limit);
            *function = Arc::new(ScalarUDF::new_from_impl(bounded));
        }
    }
}

/// A function of `GUARDED` that refuses a call whose result would be over `limit` bytes; see
/// the module docs. Everything else is the wrapped function's.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct BoundedFunction {
    inner: ScalarUDF,
    limit: usize,
}

impl BoundedFunction {
    /// `inner`, refusing calls over `limit` bytes.
    pub fn new(inner: ScalarUDF, limit: usize) -> Self {
        Self { inner, limit }
    }

    fn imp(&self) -> &Arc<dyn ScalarUDFImpl> {
        self.inner.inner()
    }

    /// An upper bound of the bytes a call on these arguments builds (`None`: not known).
    fn bound(&self, args: &[ColumnarValue], rows: usize) -> Option<u128> {
        bound(self.inner.name(), args, rows, self.limit)
    }
}

impl ScalarUDFImpl for BoundedFunction {
    fn name(&self) -> &str {
        self.imp().name()
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        self.imp().schema_name(args)
    }

    fn signature(&self) -> &Signature {
        self.imp().signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.imp().return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs<'_>) -> Result<FieldRef> {
        self.imp().return_field_from_args(args)
    }

    fn is_strict(&self) -> bool {
        self.imp().is_strict()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if let Some(bytes) = self.bound(&args.args, args.number_rows)
            && bytes > self.limit as u128
        {
            return Err(DataFusionError::ResourcesExhausted(too_big(
                self.name(),
                bytes,
                self.limit,
            )));
        }
        self.imp().invoke_with_args(args)
    }

    fn with_updated_config(&self, config: &ConfigOptions) -> Option<ScalarUDF> {
        let updated = self.imp().with_updated_config(config)?;
        Some(ScalarUDF::new_from_impl(BoundedFunction::new(
            updated, self.limit,
        )))
    }

    fn aliases(&self) -> &[String] {
        self.imp().aliases()
    }

    // `simplify` is not delegated on purpose: `concat`'s folds literal arguments into one
    // literal without going through `invoke_with_args`.

    fn conditional_arguments<'a>(
        &self,
        args: &'a [Expr],
    ) -> Option<(Vec<&'a Expr>, Vec<&'a Expr>)> {
        self.imp().conditional_arguments(args)
    }

    fn short_circuits(&self) -> bool {
        self.imp().short_circuits()
    }

    fn evaluate_bounds(&self, input: &[&Interval]) -> Result<Interval> {
        self.imp().evaluate_bounds(input)
    }

    fn propagate_constraints(
        &self,
        interval: &Interval,
        inputs: &[&Interval],
    ) -> Result<Option<Vec<Interval>>> {
        self.imp().propagate_constraints(interval, inputs)
    }

    fn output_ordering(&self, inputs: &[ExprProperties]) -> Result<SortProperties> {
        self.imp().output_ordering(inputs)
    }

    fn preserves_lex_ordering(&self, inputs: &[ExprProperties]) -> Result<bool> {
        self.imp().preserves_lex_ordering(inputs)
    }

    fn strictly_order_preserving(&self, inputs: &[ExprProperties]) -> Result<bool> {
        self.imp().strictly_order_preserving(inputs)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.imp().coerce_types(arg_types)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.imp().documentation()
    }

    fn placement(&self, args: &[ExpressionPlacement]) -> ExpressionPlacement {
        self.imp().placement(args)
    }
}

fn too_big(what: &str, bytes: u128, limit: usize) -> String {
    format!(
        "{what} would build at least {bytes} bytes in one call, over the limit of {limit} \
         bytes per expression (max_expression_bytes)"
    )
}

/// The optimizer rule that refuses, at planning, a call of a [`BoundedFunction`] on literals
/// (or with a literal count) over its limit; see the module docs.
#[derive(Debug, Default)]
pub struct BoundedExpressions;

impl OptimizerRule for BoundedExpressions {
    fn name(&self) -> &str {
        "chunk_query_bounded_expressions"
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        plan.apply_with_subqueries(|node| {
            node.apply_expressions(|expr| {
                expr.apply(|expr| {
                    check_call(expr)?;
                    Ok(TreeNodeRecursion::Continue)
                })
            })
        })?;
        Ok(Transformed::no(plan))
    }
}

/// The error for `expr` if it is a bounded function's call over its limit on what is known
/// while planning.
fn check_call(expr: &Expr) -> Result<()> {
    let Expr::ScalarFunction(ScalarFunction { func, args }) = expr else {
        return Ok(());
    };
    let Some(bounded) = func.inner().downcast_ref::<BoundedFunction>() else {
        return Ok(());
    };
    let literals: Vec<Option<&ScalarValue>> = args
        .iter()
        .map(|arg| match arg {
            Expr::Literal(value, _) => Some(value),
            _ => None,
        })
        .collect();
    let known = if literals.iter().all(Option::is_some) {
        let values: Vec<ColumnarValue> = literals
            .iter()
            .flatten()
            .map(|value| ColumnarValue::Scalar((*value).clone()))
            .collect();
        bounded.bound(&values, 1)
    } else {
        // A literal count alone over the limit: every non-empty value would be.
        let count = literals.get(1).copied().flatten().and_then(scalar_int);
        let per_unit = match bounded.name() {
            "repeat" | "array_repeat" => Some(1),
            "lpad" | "rpad" => Some(4),
            _ => None,
        };
        match (count, per_unit) {
            (Some(count), Some(unit)) => Some(u128::from(count.max(0).unsigned_abs()) * unit),
            _ => None,
        }
    };
    match known {
        Some(bytes) if bytes > bounded.limit as u128 => Err(DataFusionError::Plan(too_big(
            &short(&expr.to_string()),
            bytes,
            bounded.limit,
        ))),
        _ => Ok(()),
    }
}

/// At most 200 characters of `text`.
fn short(text: &str) -> String {
    match text.char_indices().nth(200) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_string(),
    }
}

/// An integer scalar's value.
fn scalar_int(value: &ScalarValue) -> Option<i64> {
    if !value.data_type().is_integer() {
        return None;
    }
    match value.cast_to(&DataType::Int64).ok()? {
        ScalarValue::Int64(Some(value)) => Some(value),
        // NULL, or an unsigned value past i64::MAX (the functions take i64 counts).
        ScalarValue::Int64(None) => Some(0),
        _ => None,
    }
}

/// An argument, scalar or one value per row.
enum Arg<'a> {
    Scalar(&'a ScalarValue),
    Array(&'a ArrayRef),
}

impl Arg<'_> {
    fn of(value: &ColumnarValue) -> Arg<'_> {
        match value {
            ColumnarValue::Scalar(scalar) => Arg::Scalar(scalar),
            ColumnarValue::Array(array) => Arg::Array(array),
        }
    }

    /// The bytes of a string or binary value at `row`; for other types an estimate of their
    /// printed length.
    fn bytes(&self, row: usize) -> u128 {
        match self {
            Arg::Scalar(scalar) => match scalar {
                ScalarValue::Utf8(value)
                | ScalarValue::LargeUtf8(value)
                | ScalarValue::Utf8View(value) => value.as_ref().map_or(0, String::len) as u128,
                ScalarValue::Binary(value)
                | ScalarValue::LargeBinary(value)
                | ScalarValue::BinaryView(value) => value.as_ref().map_or(0, Vec::len) as u128,
                other => other.size() as u128,
            },
            Arg::Array(array) => array_bytes(array, row),
        }
    }

    /// The size of one value at `row`, for list builders.
    fn size(&self, row: usize) -> u128 {
        match self {
            Arg::Scalar(scalar) => scalar.size() as u128,
            Arg::Array(array) => match array.data_type() {
                DataType::Utf8
                | DataType::LargeUtf8
                | DataType::Utf8View
                | DataType::Binary
                | DataType::LargeBinary
                | DataType::BinaryView => array_bytes(array, row) + 16,
                other => match other.primitive_width() {
                    Some(width) => width as u128,
                    None => (array.get_array_memory_size() / array.len().max(1)) as u128,
                },
            },
        }
    }
}

/// The bytes of a string or binary value of `array` at `row`, or an average for other types.
fn array_bytes(array: &ArrayRef, row: usize) -> u128 {
    if row >= array.len() {
        return 0;
    }
    let bytes = match array.data_type() {
        DataType::Utf8 => array.as_string::<i32>().value(row).len(),
        DataType::LargeUtf8 => array.as_string::<i64>().value(row).len(),
        DataType::Utf8View => array.as_string_view().value(row).len(),
        DataType::Binary => array.as_binary::<i32>().value(row).len(),
        DataType::LargeBinary => array.as_binary::<i64>().value(row).len(),
        DataType::BinaryView => array.as_binary_view().value(row).len(),
        _ => array.get_array_memory_size() / array.len().max(1),
    };
    bytes as u128
}

/// An integer argument, read row by row.
enum Ints {
    Scalar(i64),
    Array(Int64Array),
}

impl Ints {
    fn of(value: &ColumnarValue) -> Option<Ints> {
        match value {
            ColumnarValue::Scalar(scalar) => scalar_int(scalar).map(Ints::Scalar),
            ColumnarValue::Array(array) => {
                if !array.data_type().is_integer() {
                    return None;
                }
                let cast = arrow::compute::cast(array, &DataType::Int64).ok()?;
                Some(Ints::Array(cast.as_primitive().clone()))
            }
        }
    }

    fn at(&self, row: usize) -> i128 {
        match self {
            Ints::Scalar(value) => i128::from(*value),
            Ints::Array(array) if row < array.len() && array.is_valid(row) => {
                i128::from(array.value(row))
            }
            Ints::Array(_) => 0,
        }
    }
}

/// A non-negative count as bytes.
fn count(value: i128) -> u128 {
    value.max(0).unsigned_abs()
}

/// An upper bound of the bytes `function` builds on `args` over `rows` rows (one if every
/// argument is a scalar), stopping once past `limit`; `None` if not known.
fn bound(function: &str, args: &[ColumnarValue], rows: usize, limit: usize) -> Option<u128> {
    let all_scalar = args
        .iter()
        .all(|arg| matches!(arg, ColumnarValue::Scalar(_)));
    let rows = if all_scalar { 1 } else { rows };
    let values: Vec<Arg<'_>> = args.iter().map(Arg::of).collect();
    let per_row: Box<dyn Fn(usize) -> Option<u128> + '_> = match function {
        "repeat" => {
            let times = Ints::of(args.get(1)?)?;
            Box::new(move |row| Some(values.first()?.bytes(row) * count(times.at(row))))
        }
        "lpad" | "rpad" => {
            let length = Ints::of(args.get(1)?)?;
            Box::new(move |row| Some(4 * count(length.at(row))))
        }
        "replace" => Box::new(move |row| {
            let text = values.first()?.bytes(row);
            let from = values.get(1)?.bytes(row).max(1);
            let to = values.get(2)?.bytes(row);
            Some(text + (text / from + 1) * to)
        }),
        "concat" => Box::new(move |row| Some(values.iter().map(|arg| arg.bytes(row)).sum())),
        "concat_ws" => Box::new(move |row| {
            let separator = values.first()?.bytes(row);
            let parts: u128 = values.iter().skip(1).map(|arg| arg.bytes(row)).sum();
            Some(parts + separator * values.len().saturating_sub(2) as u128)
        }),
        "array_repeat" => {
            let times = Ints::of(args.get(1)?)?;
            Box::new(move |row| Some(values.first()?.size(row) * count(times.at(row))))
        }
        "array_resize" => {
            let length = Ints::of(args.get(1)?)?;
            Box::new(move |row| {
                let element = match values.get(2) {
                    Some(fill) => fill.size(row),
                    None => 16,
                };
                Some(element.max(1) * count(length.at(row)))
            })
        }
        "range" | "generate_series" => {
            let ints: Vec<Ints> = args.iter().map(Ints::of).collect::<Option<_>>()?;
            Box::new(move |row| {
                let elements = match ints.as_slice() {
                    [stop] => count(stop.at(row)),
                    [start, stop] => count(stop.at(row) - start.at(row)) + 1,
                    [start, stop, step] => {
                        let step = step.at(row).unsigned_abs().max(1);
                        (stop.at(row) - start.at(row)).unsigned_abs() / step + 1
                    }
                    _ => return None,
                };
                Some(elements * 8)
            })
        }
        _ => return None,
    };
    let mut total: u128 = 0;
    for row in 0..rows {
        total = total.saturating_add(per_row(row)?);
        if total > limit as u128 {
            break;
        }
    }
    Some(total)
}
