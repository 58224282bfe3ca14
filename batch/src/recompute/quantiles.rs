//! The aggregate `strata_quantiles(value)`: per group, the exact p50, p90, p95 and p99 of its
//! values and their mergeable sketch (`sketch_keys`, `sketch_counts`), as one struct.
//!
//! The values of each group are kept, sorted once when the group is emitted, and the quantiles
//! read off by rank: for n values and quantile q, position p = q·(n−1), result
//! v[⌊p⌋] + (v[⌈p⌉] − v[⌊p⌋])·(p − ⌊p⌋) — linear interpolation between the closest ranks, as
//! DuckDB's `quantile_cont` and NumPy's default. In sorted order the sketch keys
//! ([`strata_shared::sketch::key`]) come out sorted too, so the sketch is a run-length count of
//! them. One sort per group replaces a window function that ranks every value of the range in
//! one global sort, and one pass replaces the separate sketch query.
//!
//! DataFusion runs it as a [`GroupsAccumulator`] (every group of a hash aggregation in one
//! object, its values kept as (group, value) pairs and grouped by a counting sort when emitted:
//! a day's 7.16M minute buckets would otherwise be 7.16M small allocations); the intermediate state between aggregation phases is the group's values as a list,
//! so the same function works in a plan split across partitions or machines.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Float64Builder, Int32Builder,
    Int64Builder, ListArray, ListBuilder, StructArray,
};
use arrow::buffer::{NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{DataType, Field, FieldRef, Fields, Float64Type};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature, Volatility,
};

/// The SQL name of the aggregate.
pub const NAME: &str = "strata_quantiles";

/// The quantiles computed, with the names of their struct fields.
pub const QUANTILES: [(f64, &str); 4] = [(0.5, "p50"), (0.9, "p90"), (0.95, "p95"), (0.99, "p99")];

/// The aggregate, ready to register: `ctx.register_udaf(quantiles::udaf())`.
pub fn udaf() -> AggregateUDF {
    AggregateUDF::from(StrataQuantiles::default())
}

/// The struct the aggregate returns.
pub fn return_fields() -> Fields {
    let mut fields: Vec<Field> = QUANTILES
        .iter()
        .map(|(_, name)| Field::new(*name, DataType::Float64, true))
        .collect();
    fields.push(Field::new(
        "sketch_keys",
        DataType::List(Arc::new(Field::new_list_field(DataType::Int32, true))),
        true,
    ));
    fields.push(Field::new(
        "sketch_counts",
        DataType::List(Arc::new(Field::new_list_field(DataType::Int64, true))),
        true,
    ));
    Fields::from(fields)
}

/// The exact quantile `q` of `sorted` (ascending, not empty) by linear interpolation between
/// the closest ranks.
///
/// ```
/// use strata_batch::recompute::quantiles::quantile_of_sorted;
/// assert_eq!(quantile_of_sorted(&[1.0, 2.0, 3.0, 4.0], 0.5), 2.5);
/// assert_eq!(quantile_of_sorted(&[7.0], 0.99), 7.0);
/// ```
pub fn quantile_of_sorted(sorted: &[f64], q: f64) -> f64 {
    let p = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (p.floor(), p.ceil());
    let (vlo, vhi) = (sorted[lo as usize], sorted[hi as usize]);
    vlo + (vhi - vlo) * (p - lo)
}

/// The aggregate's definition (see the module's documentation).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StrataQuantiles {
    signature: Signature,
}

impl Default for StrataQuantiles {
    fn default() -> Self {
        StrataQuantiles {
            signature: Signature::exact(vec![DataType::Float64], Volatility::Immutable),
        }
    }
}

impl AggregateUDFImpl for StrataQuantiles {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Struct(return_fields()))
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(OneGroup::default()))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            format!("{}[values]", args.name),
            values_list_type(),
            true,
        ))])
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        _args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(Groups::default()))
    }
}

fn values_list_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Float64, true)))
}

/// The values of every group: (group, value) pairs in arrival order, grouped only when emitted
/// (a counting sort by group), so that millions of small groups cost no allocation each.
#[derive(Debug, Default)]
struct Groups {
    groups: Vec<u32>,
    values: Vec<f64>,
    /// Groups so far (some may have no value: every row filtered out).
    count: usize,
}

impl Groups {
    fn grow(&mut self, total_num_groups: usize) -> Result<()> {
        if total_num_groups > u32::MAX as usize {
            return Err(datafusion::error::DataFusionError::Execution(format!(
                "{NAME}: more than {} groups",
                u32::MAX
            )));
        }
        self.count = self.count.max(total_num_groups);
        Ok(())
    }

    fn push(&mut self, group: usize, v: f64) {
        self.groups.push(group as u32);
        self.values.push(v);
    }

    /// The values of the first `n` groups (all for [`EmitTo::All`]), grouped — group `g`'s
    /// values at `flat[offsets[g]..offsets[g + 1]]` — and removed; the later groups move down
    /// by `n`.
    fn take(&mut self, emit_to: EmitTo) -> (Vec<f64>, Vec<usize>) {
        let n = match emit_to {
            EmitTo::All => self.count,
            EmitTo::First(n) => n.min(self.count),
        };
        let mut offsets = vec![0usize; n + 1];
        for &g in &self.groups {
            if (g as usize) < n {
                offsets[g as usize + 1] += 1;
            }
        }
        for g in 0..n {
            offsets[g + 1] += offsets[g];
        }
        let mut next = offsets.clone();
        let mut flat = vec![0.0; offsets[n]];
        let (mut kept_groups, mut kept_values) = (Vec::new(), Vec::new());
        for (&g, &v) in self.groups.iter().zip(&self.values) {
            let g = g as usize;
            if g < n {
                flat[next[g]] = v;
                next[g] += 1;
            } else {
                kept_groups.push((g - n) as u32);
                kept_values.push(v);
            }
        }
        self.groups = kept_groups;
        self.values = kept_values;
        self.count -= n;
        (flat, offsets)
    }
}

impl GroupsAccumulator for Groups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.grow(total_num_groups)?;
        let input = values[0].as_primitive::<Float64Type>();
        let keep = |row: usize| {
            input.is_valid(row) && opt_filter.is_none_or(|f| f.is_valid(row) && f.value(row))
        };
        if input.null_count() == 0 && opt_filter.is_none() {
            self.groups.extend(group_indices.iter().map(|&g| g as u32));
            self.values.extend_from_slice(input.values());
        } else {
            for (row, &g) in group_indices.iter().enumerate() {
                if keep(row) {
                    self.push(g, input.value(row));
                }
            }
        }
        Ok(())
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.grow(total_num_groups)?;
        let lists = values[0].as_list::<i32>();
        let inner = lists.values().as_primitive::<Float64Type>();
        let offsets = lists.value_offsets();
        for (row, &g) in group_indices.iter().enumerate() {
            if lists.is_null(row) {
                continue;
            }
            let (from, to) = (offsets[row] as usize, offsets[row + 1] as usize);
            for at in from..to {
                if inner.is_valid(at) {
                    self.push(g, inner.value(at));
                }
            }
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let (mut flat, offsets) = self.take(emit_to);
        let mut out = Output::with_capacity(offsets.len() - 1);
        for w in offsets.windows(2) {
            out.append(&mut flat[w[0]..w[1]]);
        }
        Ok(Arc::new(out.finish()))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let (flat, offsets) = self.take(emit_to);
        let offsets = offsets
            .into_iter()
            .map(list_offset)
            .collect::<Result<Vec<i32>>>()?;
        Ok(vec![Arc::new(ListArray::new(
            Arc::new(Field::new_list_field(DataType::Float64, true)),
            OffsetBuffer::new(ScalarBuffer::from(offsets)),
            Arc::new(Float64Array::from(flat)),
            None,
        ))])
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        // Each row its own group: a one-value list, or a null list for a row left out.
        let input = values[0].as_primitive::<Float64Type>();
        let offsets = (0..=input.len())
            .map(list_offset)
            .collect::<Result<Vec<i32>>>()?;
        let kept: Vec<bool> = (0..input.len())
            .map(|row| {
                input.is_valid(row) && opt_filter.is_none_or(|f| f.is_valid(row) && f.value(row))
            })
            .collect();
        let nulls = kept.contains(&false).then(|| NullBuffer::from(kept));
        Ok(vec![Arc::new(ListArray::new(
            Arc::new(Field::new_list_field(DataType::Float64, true)),
            OffsetBuffer::new(ScalarBuffer::from(offsets)),
            Arc::new(Float64Array::new(input.values().clone(), None)),
            nulls,
        ))])
    }

    fn size(&self) -> usize {
        self.groups.capacity() * std::mem::size_of::<u32>()
            + self.values.capacity() * std::mem::size_of::<f64>()
    }
}

fn list_offset(n: usize) -> Result<i32> {
    i32::try_from(n).map_err(|_| {
        datafusion::error::DataFusionError::Execution(format!(
            "{NAME}: more than {} values in one batch of state",
            i32::MAX
        ))
    })
}

/// The row-at-a-time form, for plans that do not use the groups form.
#[derive(Debug, Default)]
struct OneGroup {
    values: Vec<f64>,
}

impl Accumulator for OneGroup {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let input = values[0].as_primitive::<Float64Type>();
        self.values.extend(input.iter().flatten());
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        for list in states[0].as_list::<i32>().iter().flatten() {
            self.values
                .extend(list.as_primitive::<Float64Type>().iter().flatten());
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let list = ListArray::new(
            Arc::new(Field::new_list_field(DataType::Float64, true)),
            OffsetBuffer::from_lengths([self.values.len()]),
            Arc::new(Float64Array::from(std::mem::take(&mut self.values))),
            None,
        );
        Ok(vec![ScalarValue::List(Arc::new(list))])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let mut out = Output::with_capacity(1);
        out.append(&mut self.values);
        ScalarValue::try_from_array(&out.finish(), 0)
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.values.capacity() * std::mem::size_of::<f64>()
    }
}

/// Builds the result struct, a group at a time.
struct Output {
    quantiles: [Float64Builder; 4],
    keys: ListBuilder<Int32Builder>,
    counts: ListBuilder<Int64Builder>,
    valid: Vec<bool>,
}

impl Output {
    fn with_capacity(groups: usize) -> Self {
        Output {
            quantiles: std::array::from_fn(|_| Float64Builder::with_capacity(groups)),
            keys: ListBuilder::with_capacity(Int32Builder::new(), groups),
            counts: ListBuilder::with_capacity(Int64Builder::new(), groups),
            valid: Vec::with_capacity(groups),
        }
    }

    /// Appends one group's result; sorts `values` in place.
    fn append(&mut self, values: &mut [f64]) {
        if values.is_empty() {
            for b in &mut self.quantiles {
                b.append_null();
            }
            self.keys.append_null();
            self.counts.append_null();
            self.valid.push(false);
            return;
        }
        values.sort_unstable_by(f64::total_cmp);
        for (b, (q, _)) in self.quantiles.iter_mut().zip(QUANTILES) {
            b.append_value(quantile_of_sorted(values, q));
        }
        let mut run: Option<(i32, i64)> = None;
        for &v in values.iter() {
            let k = strata_shared::sketch::key(v);
            run = match run {
                Some((key, n)) if key == k => Some((key, n + 1)),
                Some((key, n)) => {
                    self.keys.values().append_value(key);
                    self.counts.values().append_value(n);
                    Some((k, 1))
                }
                None => Some((k, 1)),
            };
        }
        if let Some((key, n)) = run {
            self.keys.values().append_value(key);
            self.counts.values().append_value(n);
        }
        self.keys.append(true);
        self.counts.append(true);
        self.valid.push(true);
    }

    fn finish(mut self) -> StructArray {
        let mut columns: Vec<ArrayRef> = self
            .quantiles
            .iter_mut()
            .map(|b| Arc::new(b.finish()) as ArrayRef)
            .collect();
        columns.push(Arc::new(self.keys.finish()));
        columns.push(Arc::new(self.counts.finish()));
        let nulls = self
            .valid
            .contains(&false)
            .then(|| NullBuffer::from(self.valid));
        StructArray::new(return_fields(), columns, nulls)
    }
}

#[cfg(test)]
mod tests;
