//! Channel maps: what the other channels' readings at the same step say of each value,
//! W[ids, ids] · x, and where that answer goes. Shared by the model's cross-channel prior and
//! its channel read-out; only tensor arithmetic, no parameters of its own.

use burn::prelude::*;

/// What a channel map reads and where its answer goes, per window, channel and step:
/// [B, C, T]. The map's answer W·read is in training-standardised units; the output is in
/// instance units, so it lands as (W·read − instance mean) / instance scale.
#[derive(Debug, Clone)]
pub struct ChannelMapInputs {
    /// In training-standardised units; 0 where not shown.
    pub read: Tensor<3>,
    /// 1 / the channel's instance scale where the answer is added, 0 elsewhere.
    pub fill: Tensor<3>,
    /// − instance mean / instance scale where the answer is added (absent: all zero).
    pub shift: Option<Tensor<3>>,
    /// 1 at the steps where every channel of the window is shown, 0 elsewhere: [B, 1, T].
    /// Where present, a channel's map is checked on those steps and fills the window only
    /// if it reads them as well as it read the training windows (the read-out's tie check).
    pub check: Option<Tensor<3>>,
}

/// What the other channels say of each value at the same step: W[ids, ids] · x, [B, C, T]
/// (`x` is the departure from a line for the cross-channel prior, the level for the
/// read-out). A value not shown has x = 0, so W's diagonal never reads a hidden value.
pub fn channel_map(map: Tensor<2>, x: &Tensor<3>, channel_ids: &Tensor<2, Int>) -> Tensor<3> {
    let [b, c] = channel_ids.dims();
    let m = map.dims()[1];
    let rows = map
        .select(0, channel_ids.clone().reshape([b * c]))
        .reshape([b, c, m]); // [B, C, M]
    let columns = channel_ids.clone().unsqueeze_dim::<3>(1).repeat_dim(1, c); // [B, C, C]
    let local = rows.gather(2, columns); // [B, C, C]: W[id_i, id_j]
    local.matmul(x.clone()) // [B, C, T]
}
