//! `sum` of `Decimal128` values, exact or an error, in 128-bit integers.
//!
//! DataFusion's `sum` of a `Decimal128(p, s)` adds `i128`s with wrapping additions. Summing
//! them as `Decimal256` instead (what [`crate::checked::WidenSums`] first did) is exact but
//! costs a cast per row and twice the memory per group: a third of a `GROUP BY` of 100,000
//! addresses with `sum(value)`. [`ExactSum`] adds in `i128` with checked additions: an
//! addition that overflows `i128` is an error, and so is a sum past the result's precision,
//! `Decimal128(min(38, p + 10), s)` (DataFusion's type for the sum). Partial sums may pass
//! that precision on the way, as long as they fit an `i128`: only the answer is checked.
//!
//! Used for plain aggregates (`GROUP BY` or not, with or without `FILTER`); `DISTINCT` sums and
//! window sums keep the `Decimal256` path.

use std::mem::size_of;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Decimal128Array};
use arrow::datatypes::{
    DECIMAL128_MAX_PRECISION, DataType, Decimal128Type, DecimalType, Field, FieldRef,
};
use datafusion::common::{Result, ScalarValue};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature,
    TypeSignature, Volatility,
};

/// The aggregate function; see the [module](self).
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct ExactSum {
    signature: Signature,
}

impl ExactSum {
    /// The function, as DataFusion calls it.
    pub(crate) fn udaf() -> Arc<AggregateUDF> {
        Arc::new(AggregateUDF::from(Self {
            signature: Signature::new(TypeSignature::Any(1), Volatility::Immutable),
        }))
    }
}

/// The type of the sum of `argument`: DataFusion's for a `Decimal128` sum.
fn sum_type(argument: &DataType) -> Result<DataType> {
    match argument {
        DataType::Decimal128(precision, scale) => Ok(DataType::Decimal128(
            DECIMAL128_MAX_PRECISION.min(precision.saturating_add(10)),
            *scale,
        )),
        other => Err(DataFusionError::Plan(format!(
            "exact_sum takes a Decimal128, not {other}"
        ))),
    }
}

/// The type partial sums travel in between the stages of an aggregation: any `i128`.
fn state_type(sum: &DataType) -> DataType {
    match sum {
        DataType::Decimal128(_, scale) => DataType::Decimal128(DECIMAL128_MAX_PRECISION, *scale),
        other => other.clone(),
    }
}

impl AggregateUDFImpl for ExactSum {
    fn name(&self) -> &str {
        "exact_sum"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types {
            [argument] => sum_type(argument),
            _ => Err(DataFusionError::Plan(
                "exact_sum takes one argument".to_string(),
            )),
        }
    }

    fn accumulator(&self, args: AccumulatorArgs<'_>) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(Sum {
            sum: None,
            data_type: args.return_field.data_type().clone(),
        }))
    }

    fn state_fields(&self, args: StateFieldsArgs<'_>) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            format_state_name(args.name, "sum"),
            state_type(args.return_type()),
            true,
        ))])
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs<'_>) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs<'_>,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(Sums {
            sums: Vec::new(),
            seen: Vec::new(),
            data_type: args.return_field.data_type().clone(),
        }))
    }
}

/// An addition that overflowed `i128`: far past the sum's type.
fn overflow(data_type: &DataType) -> DataFusionError {
    DataFusionError::Execution(format!(
        "sum overflow: the sum does not fit its type {data_type} (nor 128 bits)"
    ))
}

/// The precision and scale of the sum's type, a `Decimal128`.
fn decimal_parts(data_type: &DataType) -> Result<(u8, i8)> {
    match data_type {
        DataType::Decimal128(precision, scale) => Ok((*precision, *scale)),
        other => Err(DataFusionError::Internal(format!(
            "exact_sum answers a Decimal128, not {other}"
        ))),
    }
}

/// `sum`, checked against `data_type`'s precision; `None` (no values) is null.
fn answer(sum: Option<i128>, data_type: &DataType) -> Result<Option<i128>> {
    let (precision, scale) = decimal_parts(data_type)?;
    match sum {
        Some(sum) => Decimal128Type::validate_decimal_precision(sum, precision, scale)
            .map(|()| Some(sum))
            .map_err(|_| {
                DataFusionError::Execution(format!(
                    "sum overflow: {sum} does not fit the sum's type {data_type}"
                ))
            }),
        None => Ok(None),
    }
}

/// The one argument of a call, a `Decimal128` array.
fn decimals(values: &[ArrayRef]) -> Result<&Decimal128Array> {
    let [values] = values else {
        return Err(DataFusionError::Internal(format!(
            "exact_sum takes one argument, not {}",
            values.len()
        )));
    };
    values.as_primitive_opt::<Decimal128Type>().ok_or_else(|| {
        DataFusionError::Internal(format!(
            "exact_sum got {}, not a Decimal128",
            values.data_type()
        ))
    })
}

/// Whether a `FILTER` clause keeps `row` (a null is not kept).
fn kept(filter: Option<&BooleanArray>, row: usize) -> bool {
    filter.is_none_or(|filter| filter.is_valid(row) && filter.value(row))
}

/// The sums of the groups of a `GROUP BY`.
struct Sums {
    sums: Vec<i128>,
    /// Whether the group has had a value (else its sum is null).
    seen: Vec<bool>,
    data_type: DataType,
}

impl Sums {
    /// Adds `values` (a `Decimal128` array) to the groups of its rows, skipping the rows
    /// `filter` does not keep.
    fn add(
        &mut self,
        values: &Decimal128Array,
        group_indices: &[usize],
        filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.sums.resize(total_num_groups, 0);
        self.seen.resize(total_num_groups, false);
        let (sums, seen, data_type) = (&mut self.sums, &mut self.seen, &self.data_type);
        if values.null_count() == 0 && filter.is_none() {
            for (&group, &value) in group_indices.iter().zip(values.values()) {
                let sum = &mut sums[group];
                *sum = sum.checked_add(value).ok_or_else(|| overflow(data_type))?;
                seen[group] = true;
            }
            return Ok(());
        }
        for (row, &group) in group_indices.iter().enumerate() {
            if kept(filter, row) && values.is_valid(row) {
                let sum = &mut sums[group];
                *sum = sum
                    .checked_add(values.value(row))
                    .ok_or_else(|| overflow(data_type))?;
                seen[group] = true;
            }
        }
        Ok(())
    }

    /// The sums of the groups `emit_to` names, taken out, and a null where a group had no
    /// value.
    fn take(&mut self, emit_to: EmitTo) -> (Vec<i128>, Vec<bool>) {
        (
            emit_to.take_needed(&mut self.sums),
            emit_to.take_needed(&mut self.seen),
        )
    }
}

impl GroupsAccumulator for Sums {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.add(
            decimals(values)?,
            group_indices,
            opt_filter,
            total_num_groups,
        )
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let (sums, seen) = self.take(emit_to);
        let answers = sums
            .into_iter()
            .zip(seen)
            .map(|(sum, seen)| answer(seen.then_some(sum), &self.data_type))
            .collect::<Result<Decimal128Array>>()?;
        Ok(Arc::new(answers.with_data_type(self.data_type.clone())))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let (sums, seen) = self.take(emit_to);
        let partial: Decimal128Array = sums
            .into_iter()
            .zip(seen)
            .map(|(sum, seen)| seen.then_some(sum))
            .collect();
        Ok(vec![Arc::new(
            partial.with_data_type(state_type(&self.data_type)),
        )])
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        // A partial sum is null where its group had no value: skipped like a null value.
        self.update_batch(values, group_indices, None, total_num_groups)
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let values = decimals(values)?;
        // Each row its own partial sum: its value, null where the filter drops it.
        let partial: Decimal128Array = (0..values.len())
            .map(|row| (kept(opt_filter, row) && values.is_valid(row)).then(|| values.value(row)))
            .collect();
        Ok(vec![Arc::new(
            partial.with_data_type(state_type(&self.data_type)),
        )])
    }

    fn size(&self) -> usize {
        self.sums.capacity() * size_of::<i128>() + self.seen.capacity()
    }
}

/// The sum of an aggregate without `GROUP BY`.
#[derive(Debug)]
struct Sum {
    sum: Option<i128>,
    data_type: DataType,
}

impl Accumulator for Sum {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let values = decimals(values)?;
        if values.null_count() == values.len() {
            return Ok(());
        }
        let mut sum = self.sum.unwrap_or(0);
        if values.null_count() == 0 {
            for &value in values.values() {
                sum = sum
                    .checked_add(value)
                    .ok_or_else(|| overflow(&self.data_type))?;
            }
        } else {
            for value in values.iter().flatten() {
                sum = sum
                    .checked_add(value)
                    .ok_or_else(|| overflow(&self.data_type))?;
            }
        }
        self.sum = Some(sum);
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let (precision, scale) = decimal_parts(&self.data_type)?;
        Ok(ScalarValue::Decimal128(
            answer(self.sum, &self.data_type)?,
            precision,
            scale,
        ))
    }

    fn size(&self) -> usize {
        size_of::<Self>()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let (precision, scale) = decimal_parts(&state_type(&self.data_type))?;
        Ok(vec![ScalarValue::Decimal128(self.sum, precision, scale)])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.update_batch(states)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn decimals(values: &[Option<i128>]) -> ArrayRef {
        Arc::new(
            values
                .iter()
                .copied()
                .collect::<Decimal128Array>()
                .with_data_type(DataType::Decimal128(38, 0)),
        )
    }

    fn sums() -> Sums {
        Sums {
            sums: Vec::new(),
            seen: Vec::new(),
            data_type: DataType::Decimal128(38, 0),
        }
    }

    #[test]
    fn groups_sum_exactly_with_nulls_and_filters() {
        let mut accumulator = sums();
        let values = decimals(&[Some(1), None, Some(i128::MAX / 4), Some(5), Some(7)]);
        let filter =
            BooleanArray::from(vec![Some(true), Some(true), Some(true), None, Some(false)]);
        accumulator
            .update_batch(&[values], &[0, 1, 0, 2, 2], Some(&filter), 4)
            .unwrap();
        // Group 0: 1 + MAX/4 (past 38 digits: only the answer is checked).
        let state = accumulator.state(EmitTo::All).unwrap();
        let mut merged = sums();
        merged.merge_batch(&state, &[3, 2, 1, 0], 4).unwrap();
        merged
            .merge_batch(&[decimals(&[Some(-(i128::MAX / 4))])], &[3], 4)
            .unwrap();
        let answer = merged.evaluate(EmitTo::All).unwrap();
        let answer = answer.as_primitive::<Decimal128Type>();
        // The first group's sum came back to 1 in group 3; the others had only a null, a
        // filtered-out row, or nothing: null.
        assert_eq!(
            answer.iter().collect::<Vec<_>>(),
            vec![None, None, None, Some(1)]
        );
    }

    #[test]
    fn overflow_is_an_error_not_a_wrapped_sum() {
        let mut accumulator = sums();
        let big = decimals(&[Some(i128::MAX / 2 + 1), Some(i128::MAX / 2 + 1)]);
        assert!(accumulator.update_batch(&[big], &[0, 0], None, 1).is_err());

        // Fits 128 bits but not 38 digits: an error at the answer.
        let mut accumulator = sums();
        let nines = 10_i128.pow(38) - 1;
        accumulator
            .update_batch(&[decimals(&[Some(nines), Some(1)])], &[0, 0], None, 1)
            .unwrap();
        assert!(accumulator.evaluate(EmitTo::All).is_err());

        let mut plain = Sum {
            sum: None,
            data_type: DataType::Decimal128(38, 0),
        };
        plain
            .update_batch(&[decimals(&[Some(nines), None])])
            .unwrap();
        assert!(plain.update_batch(&[decimals(&[Some(i128::MAX)])]).is_err());
    }
}
