// TorchNat: NAT's dynamic integration unit on one projection, written op by op from method.md
// (Step 1.2) in TorchSharp, gradients by autograd. Mirrors, in the engine:
//   src/NegDistill.Core/Model/NatAdapter.cs   the adapter (LoRA_pos, frozen LoRA_neg, Q, K, U1, U2)
//   src/NegDistill.Core/Ops/Integration.cs    the fused per-row part and exact-erf GELU
// The engine folds U2 out of the sum (y = Wx + U2·((1−α)GELU(U1 h_pos) + α GELU(U1 h_neg))); this file
// keeps method.md's literal form with v_pos and v_neg, so that folding is checked too.
//
//   h_pos = x Wᵀ + s_pos · (x A_posᵀ) B_posᵀ        x (N,in), W (out,in), A (r,in), B (out,r)
//   h_neg = x Wᵀ + s_neg · (x A_negᵀ) B_negᵀ        LoRA_neg frozen, no dropout
//   q     = x Qᵀ                                    Q (D,in)                 q (N,D)
//   k_i   = h_i Kᵀ                                  K (D,out)                k_i (N,D)
//   v_i   = GELU(h_i U1ᵀ) U2ᵀ                       U1 (D,out), U2 (out,D)   v_i (N,out), exact erf GELU
//   a     = softmax over {pos, neg} of (q·k_i)/T                              a (N,2)
//   α     = 2β·a_neg − β                                                      α (N)
//   y     = x Wᵀ + (1 − α)·v_pos + α·v_neg                                    y (N,out)
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace NegDistill.TorchReference;

public sealed class TorchNat
{
    public required Tensor W, APos, BPos, ANeg, BNeg, Q, K, U1, U2;
    public required double ScalePos, ScaleNeg, Beta, Temperature;

    /// <summary>y (N,out) and α (N) for x (N,in).</summary>
    public (Tensor Y, Tensor Alpha) Forward(Tensor x)
    {
        var wx = F.linear(x, W);                                                  // (N,out)
        var hPos = wx + F.linear(F.linear(x, APos), BPos) * ScalePos;
        var hNeg = wx + F.linear(F.linear(x, ANeg), BNeg) * ScaleNeg;
        var q = F.linear(x, Q);                                                   // (N,D)
        var kPos = F.linear(hPos, K);
        var kNeg = F.linear(hNeg, K);
        var vPos = F.linear(F.gelu(F.linear(hPos, U1)), U2);                      // (N,out)
        var vNeg = F.linear(F.gelu(F.linear(hNeg, U1)), U2);
        var scores = stack([(q * kPos).sum(-1), (q * kNeg).sum(-1)], -1) / Temperature;   // (N,2)
        var aNeg = F.softmax(scores, -1).select(-1, 1);                          // (N)
        var alpha = aNeg * (2 * Beta) - Beta;
        var a = alpha.unsqueeze(-1);
        var y = wx + (1 - a) * vPos + a * vNeg;
        return (y, alpha);
    }
}
