using System.Numerics;
using System.Numerics.Tensors;
namespace NegDistill.Ops;

/// <summary>
/// Causal multi-head self-attention with a key padding mask.
/// For batch b, head h, query t:  s_ts = q_t·k_s / √hd for s ≤ t with keyMask[b,s] = 1,
/// P_t = softmax(s_t) (max-subtracted), out_t = Σ_s P_ts v_s. A query with no visible key (a left
/// padding position) gets P = 0 and out = 0.
/// Backward: dP_ts = dout_t·v_s;  dS_ts = P_ts (dP_ts − Σ_s' P_ts' dP_ts');
///           dq_t = Σ_s dS_ts k_s /√hd;  dk_s = Σ_t dS_ts q_t /√hd;  dv_s = Σ_t P_ts dout_t.
/// The kernel version computes dq per query row and dk, dv per key row (no atomics); this twin
/// keeps the same split. CPU twin of kernels/NegDistill.Kernels/AttentionKernels.cs.
/// </summary>
public static class Attention
{
    /// <param name="outp">(B,T,H·hd)</param><param name="att">(B,H,T,T)</param>
    /// <param name="q">(B,T,H·hd)</param><param name="k">(B,T,H·hd)</param><param name="v">(B,T,H·hd)</param>
    /// <param name="keyMask">(B,T) 1 or 0</param>
    public static void Forward<T>(Span<T> outp, Span<T> att, ReadOnlySpan<T> q, ReadOnlySpan<T> k, ReadOnlySpan<T> v,
        ReadOnlySpan<T> keyMask, int B, int Tn, int H, int hd)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int C = H * hd;
        T scale = T.One / T.Sqrt(T.CreateTruncating(hd));
        for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
        for (int t = 0; t < Tn; t++)
        {
            var prow = att.Slice(((b * H + h) * Tn + t) * Tn, Tn);
            var qt = q.Slice((b * Tn + t) * C + h * hd, hd);
            T max = T.NegativeInfinity;
            for (int s = 0; s <= t; s++)
            {
                if (keyMask[b * Tn + s] == T.Zero) continue;
                T dot = TensorPrimitives.Dot(qt, k.Slice((b * Tn + s) * C + h * hd, hd)) * scale;
                prow[s] = dot;
                if (dot > max) max = dot;
            }
            T sum = T.Zero;
            for (int s = 0; s < Tn; s++)
            {
                bool visible = s <= t && keyMask[b * Tn + s] != T.Zero;
                T e = visible ? T.Exp(prow[s] - max) : T.Zero;
                prow[s] = e;
                sum += e;
            }
            T inv = sum > T.Zero ? T.One / sum : T.Zero;
            var ot = outp.Slice((b * Tn + t) * C + h * hd, hd);
            ot.Clear();
            for (int s = 0; s <= t; s++)
            {
                T p = prow[s] * inv;
                prow[s] = p;
                if (p == T.Zero) continue;
                TensorPrimitives.MultiplyAdd(v.Slice((b * Tn + s) * C + h * hd, hd), p, ot, ot);
            }
        }
    }

    /// <param name="datt">(B,H,T,T) scratch: receives dS</param>
    public static void Backward<T>(Span<T> dq, Span<T> dk, Span<T> dv, Span<T> datt, ReadOnlySpan<T> dout, ReadOnlySpan<T> att,
        ReadOnlySpan<T> q, ReadOnlySpan<T> k, ReadOnlySpan<T> v, int B, int Tn, int H, int hd)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int C = H * hd;
        T scale = T.One / T.Sqrt(T.CreateTruncating(hd));
        // pass 1, per query row: dS and dq
        for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
        for (int t = 0; t < Tn; t++)
        {
            int row = ((b * H + h) * Tn + t) * Tn;
            var dot = dout.Slice((b * Tn + t) * C + h * hd, hd);
            T acc = T.Zero;
            for (int s = 0; s <= t; s++)
            {
                T d = TensorPrimitives.Dot(dot, v.Slice((b * Tn + s) * C + h * hd, hd));
                datt[row + s] = d;
                acc += att[row + s] * d;
            }
            var dqt = dq.Slice((b * Tn + t) * C + h * hd, hd);
            for (int s = 0; s < Tn; s++)
            {
                T ds = s <= t ? att[row + s] * (datt[row + s] - acc) : T.Zero;
                datt[row + s] = ds;
                if (ds == T.Zero) continue;
                TensorPrimitives.MultiplyAdd(k.Slice((b * Tn + s) * C + h * hd, hd), ds * scale, dqt, dqt);
            }
        }
        // pass 2, per key row: dk and dv
        for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
        for (int s = 0; s < Tn; s++)
        {
            var dks = dk.Slice((b * Tn + s) * C + h * hd, hd);
            var dvs = dv.Slice((b * Tn + s) * C + h * hd, hd);
            for (int t = s; t < Tn; t++)
            {
                int row = ((b * H + h) * Tn + t) * Tn;
                T ds = datt[row + s], p = att[row + s];
                if (ds != T.Zero) TensorPrimitives.MultiplyAdd(q.Slice((b * Tn + t) * C + h * hd, hd), ds * scale, dks, dks);
                if (p != T.Zero) TensorPrimitives.MultiplyAdd(dout.Slice((b * Tn + t) * C + h * hd, hd), p, dvs, dvs);
            }
        }
    }
}
