// TorchNce: NCE's calibrated distillation loss (method.md, Step 2) written op by op in TorchSharp,
// the student gradient by autograd. Mirrors, in the engine:
//   src/NegDistill.Core/Ops/Nce.cs          KL_t, β_b, the fused loss and its gradient
//   src/NegDistill.Core/Model/NceHead.cs    mixing a, temperature T, averaging over loss tokens
//
//   p_nat = softmax(z_nat/T)   p_neg = softmax(z_neg/T)   log p_s = log_softmax(z_s/T)     (B,T,V)
//   KL_t  = Σ_v p_neg · (log(p_neg + 1e-7) − log(p_nat + 1e-7))                            (B,T)
//   β_b   = tanh(Σ_t m_bt KL_t / Σ_t m_bt)              m = attention mask                 (B)
//   kd_t  = −T² Σ_v p_nat · log p_s · (0.5 + β_b)                                          (B,T)
//   ce_t  = −log softmax(z_s)[y_t]                      rows with y_t >= 0                 (B,T)
//   L     = (1 − a)·Σ ce / n_ce + a·Σ_t k_t kd_t / Σ_t k_t
// n_ce counts rows with a target; L_kd averages over the attention mask (k = m, method.md), so a
// sequence's last real token, which has no next token, has a KD term and no CE term.
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace NegDistill.TorchReference;

public static class TorchNce
{
    public const double Epsilon = 1e-7;

    /// <summary>KL_t (B,T) of p_neg from p_nat at temperature T.</summary>
    public static Tensor Kl(Tensor zNat, Tensor zNeg, double temperature)
    {
        var pNat = F.softmax(zNat / temperature, -1);
        var pNeg = F.softmax(zNeg / temperature, -1);
        return (pNeg * ((pNeg + Epsilon).log() - (pNat + Epsilon).log())).sum(-1);
    }

    /// <summary>β (B) from KL (B,T) and the attention mask (B,T); 0 for a sequence with no real token.</summary>
    public static Tensor Beta(Tensor kl, Tensor mask)
    {
        var m = mask.to(kl.dtype);
        var den = m.sum(-1);
        return where(den.gt(0), tanh((kl * m).sum(-1) / den.clamp_min(1e-300)), zeros_like(den));
    }

    public sealed record Result(Tensor Loss, Tensor Ce, Tensor Kd, Tensor Kl, Tensor Beta);

    /// <param name="zs">(B,T,V) student logits (the tensor autograd differentiates)</param>
    /// <param name="zNat">(B,T,V)</param><param name="zNeg">(B,T,V)</param>
    /// <param name="targets">(B,T) int, −1 outside the loss</param><param name="mask">(B,T) attention mask 0/1</param>
    public static Result Loss(Tensor zs, Tensor zNat, Tensor zNeg, Tensor targets, Tensor mask, double a, double temperature)
    {
        Tensor kl, beta, pNat;
        using (no_grad())                                                          // teachers and β are constants
        {
            kl = Kl(zNat, zNeg, temperature);                                       // (B,T)
            beta = Beta(kl, mask);                                                 // (B)
            pNat = F.softmax(zNat / temperature, -1);                              // (B,T,V)
        }
        var logPs = F.log_softmax(zs / temperature, -1);
        var kdRow = -(temperature * temperature) * (pNat * logPs).sum(-1) * (beta.unsqueeze(-1) + 0.5);   // (B,T)
        var y = targets.to(ScalarType.Int64);
        var valid = y.ge(0).to(zs.dtype);                                          // (B,T)
        var ceRow = -F.log_softmax(zs, -1).gather(-1, y.clamp_min(0).unsqueeze(-1)).squeeze(-1);           // (B,T)
        var kdMask = mask.to(zs.dtype);                                            // L_kd over the attention mask
        var ce = (ceRow * valid).sum() / valid.sum().clamp_min(1);
        var kd = (kdRow * kdMask).sum() / kdMask.sum().clamp_min(1);
        var loss = ce * (1 - a) + kd * a;
        return new Result(loss, ce, kd, kl, beta);
    }
}
