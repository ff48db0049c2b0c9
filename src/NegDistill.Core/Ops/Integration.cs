using System.Numerics;
namespace NegDistill.Ops;

/// <summary>
/// The exact (erf) GELU of torch.nn.GELU(approximate='none'): GELU(x) = x·Φ(x), with Φ the standard
/// normal CDF, and its derivative GELU'(x) = Φ(x) + x·φ(x), φ(x) = exp(−x²/2)/√(2π).
///
/// .NET has no erf, so Φ is computed from W. J. Cody's rational Chebyshev approximations ("Rational
/// Chebyshev approximations for the error function", Math. Comp. 23 (1969) 631–638; the coefficient
/// sets of Netlib SPECFUN CALERF). With z = x/√2:
///   |z| &lt; 0.46875:   erf(z) = z·A(z²)/B(z²)                        Φ = ½ + ½·erf(z)
///   0.46875 ≤ |z| ≤ 4: erfc(|z|) = exp(−z²)·C(|z|)/D(|z|)
///   |z| &gt; 4:         erfc(|z|) = exp(−z²)/|z|·(1/√π − w·P(w)/Q(w)), w = 1/z²
///   and then Φ = 1 − ½·erfc(z) for z &gt; 0, ½·erfc(|z|) for z &lt; 0,
/// so the lower tail keeps full relative accuracy (no 1 − 1 cancellation). The rational functions are
/// accurate to ~1e-16 relative in double (they were designed for it); evaluated in float the result is
/// within a few ulp (~1e-7), which is the precision of everything else in the fp32 path. Unlike CALERF
/// we compute exp(−z²) directly instead of splitting z² to recover its rounding error: that adds a
/// relative error of about z²·ε to the tail value erfc(|z|) (≤ 1e-13 in double before it underflows;
/// in float it only shows in lower-tail values below 1e-7, i.e. absolute errors below 1e-13).
///
/// <see cref="PhiF"/> is the one implementation used by the ILGPU kernel AND by the fp32 CPU twin
/// (<see cref="Phi{T}"/> forwards to it for T = float), so both sides evaluate the same function;
/// for T = double the same formulas run in double (the gradient-check oracle).
/// </summary>
public static class Gelu
{
    // Cody (1969), erf on [0, 0.46875]: erf(z) = z·(A0..A3 in z², leading A4) / (B0..B3, monic)
    const double A0 = 3.16112374387056560e00, A1 = 1.13864154151050156e02, A2 = 3.77485237685302021e02,
                 A3 = 3.20937758913846947e03, A4 = 1.85777706184603153e-1;
    const double B0 = 2.36012909523441209e01, B1 = 2.44024637934444173e02, B2 = 1.28261652607737228e03,
                 B3 = 2.84423683343917062e03;
    // erfc·exp(z²) on [0.46875, 4]
    const double C0 = 5.64188496988670089e-1, C1 = 8.88314979438837594e00, C2 = 6.61191906371416295e01,
                 C3 = 2.98635138197400131e02, C4 = 8.81952221241769090e02, C5 = 1.71204761263407058e03,
                 C6 = 2.05107837782607147e03, C7 = 1.23033935479799725e03, C8 = 2.15311535474403846e-8;
    const double D0 = 1.57449261107098347e01, D1 = 1.17693950891312499e02, D2 = 5.37181101862009858e02,
                 D3 = 1.62138957456669019e03, D4 = 3.29079923573345963e03, D5 = 4.36261909014324716e03,
                 D6 = 3.43936767414372164e03, D7 = 1.23033935480374942e03;
    // asymptotic erfc on (4, ∞), in w = 1/z²
    const double P0 = 3.05326634961232344e-1, P1 = 3.60344899949804439e-1, P2 = 1.25781726111229246e-1,
                 P3 = 1.60837851487422766e-2, P4 = 6.58749161529837803e-4, P5 = 1.63153871373020978e-2;
    const double Q0 = 2.56852019228982242e00, Q1 = 1.87295284992346047e00, Q2 = 5.27905102951428412e-1,
                 Q3 = 6.05183413124413191e-2, Q4 = 2.33520497626869185e-3;
    const double InvSqrtPi = 5.6418958354775628695e-1, InvSqrt2 = 0.70710678118654752440, InvSqrt2Pi = 0.39894228040143267794;
    const double Small = 0.46875, Mid = 4.0;

    /// <summary>Φ(x) in float: kernels and the fp32 CPU twin. Branches only, no allocation.</summary>
    public static float PhiF(float x)
    {
        float z = x * (float)InvSqrt2, az = MathF.Abs(z);
        if (az < (float)Small)
        {
            float t = z * z;
            float num = ((((float)A4 * t + (float)A0) * t + (float)A1) * t + (float)A2) * t + (float)A3;
            float den = (((t + (float)B0) * t + (float)B1) * t + (float)B2) * t + (float)B3;
            return 0.5f + 0.5f * z * num / den;
        }
        float r;
        if (az <= (float)Mid)
        {
            float num = (((((((((float)C8 * az + (float)C0) * az + (float)C1) * az + (float)C2) * az + (float)C3) * az + (float)C4) * az + (float)C5) * az + (float)C6) * az) + (float)C7;
            float den = (((((((az + (float)D0) * az + (float)D1) * az + (float)D2) * az + (float)D3) * az + (float)D4) * az + (float)D5) * az + (float)D6) * az + (float)D7;
            r = num / den;
        }
        else
        {
            float w = 1f / (az * az);
            float num = (((((float)P5 * w + (float)P0) * w + (float)P1) * w + (float)P2) * w + (float)P3) * w + (float)P4;
            float den = ((((w + (float)Q0) * w + (float)Q1) * w + (float)Q2) * w + (float)Q3) * w + (float)Q4;
            r = ((float)InvSqrtPi - w * num / den) / az;
        }
        float half = 0.5f * MathF.Exp(-az * az) * r;   // ½·erfc(|z|)
        return z > 0f ? 1f - half : half;
    }

    /// <summary>GELU(x) = x·Φ(x), float.</summary>
    public static float ForwardF(float x) => x * PhiF(x);

    /// <summary>GELU'(x) = Φ(x) + x·φ(x), float.</summary>
    public static float GradF(float x) => PhiF(x) + x * (float)InvSqrt2Pi * MathF.Exp(-0.5f * x * x);

    /// <summary>Φ(x) in T; for float exactly <see cref="PhiF"/>.</summary>
    public static T Phi<T>(T x) where T : IFloatingPointIeee754<T>
    {
        if (typeof(T) == typeof(float)) return T.CreateTruncating(PhiF(float.CreateTruncating(x)));
        static T K(double v) => T.CreateTruncating(v);
        T half = K(0.5), z = x * K(InvSqrt2), az = T.Abs(z);
        if (az < K(Small))
        {
            T t = z * z;
            T num = (((K(A4) * t + K(A0)) * t + K(A1)) * t + K(A2)) * t + K(A3);
            T den = (((t + K(B0)) * t + K(B1)) * t + K(B2)) * t + K(B3);
            return half + half * z * num / den;
        }
        T r;
        if (az <= K(Mid))
        {
            T num = ((((((((K(C8) * az + K(C0)) * az + K(C1)) * az + K(C2)) * az + K(C3)) * az + K(C4)) * az + K(C5)) * az + K(C6)) * az) + K(C7);
            T den = (((((((az + K(D0)) * az + K(D1)) * az + K(D2)) * az + K(D3)) * az + K(D4)) * az + K(D5)) * az + K(D6)) * az + K(D7);
            r = num / den;
        }
        else
        {
            T w = T.One / (az * az);
            T num = ((((K(P5) * w + K(P0)) * w + K(P1)) * w + K(P2)) * w + K(P3)) * w + K(P4);
            T den = ((((w + K(Q0)) * w + K(Q1)) * w + K(Q2)) * w + K(Q3)) * w + K(Q4);
            r = (K(InvSqrtPi) - w * num / den) / az;
        }
        T e = half * T.Exp(-az * az) * r;
        return z > T.Zero ? T.One - e : e;
    }

    public static T Forward<T>(T x) where T : IFloatingPointIeee754<T>
        => typeof(T) == typeof(float) ? T.CreateTruncating(ForwardF(float.CreateTruncating(x))) : x * Phi(x);

    public static T Grad<T>(T x) where T : IFloatingPointIeee754<T>
        => typeof(T) == typeof(float) ? T.CreateTruncating(GradF(float.CreateTruncating(x)))
            : Phi(x) + x * T.CreateTruncating(InvSqrt2Pi) * T.Exp(T.CreateTruncating(-0.5) * x * x);

    /// <summary>erf(x) on the same approximation (for tests against published values):
    /// erf(x) = 2Φ(x√2) − 1 (full accuracy away from the far lower tail of Φ).</summary>
    public static double Erf(double x) => 2.0 * Phi(x * Math.Sqrt(2.0)) - 1.0;
}

/// <summary>
/// NAT's dynamic integration unit (method.md, Step 1.2), the per-row part. For one adapted
/// projection with frozen W and input x, the adapter computes by matmuls
///   h_pos = Wx + s·B_pos A_pos drop(x),  h_neg = Wx + s·B_neg A_neg x,
///   q = Q x,  k_i = K h_i,  u_i = U1 h_i        (D = 128 each)
/// and this op does the rest of the row:
///   a_neg = softmax_{pos,neg}(q·k_i / T)_neg = 1 / (1 + exp((q·k_pos − q·k_neg)/T))
///   α     = 2β·a_neg − β
///   mix   = (1 − α)·GELU(u_pos) + α·GELU(u_neg)                        (D)
/// after which the adapter adds y += mix·U2ᵀ. Because U2 is linear (no bias),
///   (1 − α)·U2 GELU(u_pos) + α·U2 GELU(u_neg) = U2 ((1 − α) GELU(u_pos) + α GELU(u_neg)),
/// so the method's y = Wx + (1 − α)v_pos + α v_neg is computed with ONE (N,D)×(D,out) matmul
/// instead of two, and v_pos, v_neg, dv_pos, dv_neg (each N×out) never exist.
///
/// Backward, given dmix = dy·U2 (a matmul; dU2 += dyᵀ·mix is another):
///   dα       = Σ_j dmix_j·(GELU(u_neg,j) − GELU(u_pos,j))                (one row reduction)
///   du_pos  += (1 − α)·dmix ⊙ GELU'(u_pos),  du_neg += α·dmix ⊙ GELU'(u_neg)
///   dℓ_neg   = 2β·dα·a_neg(1 − a_neg),  dℓ_pos = −dℓ_neg                  (ℓ_i = q·k_i / T)
///   dq      += (dℓ_pos·k_pos + dℓ_neg·k_neg)/T,  dk_pos += dℓ_pos·q/T,  dk_neg += dℓ_neg·q/T
/// State kept from the forward: q, k_pos, k_neg, u_pos, u_neg (N,D each; the matmul outputs, needed
/// anyway for dK, dU1 via h and for the score derivative), a_neg (N), and mix (N,D) for dU2.
/// GELU(u) and GELU'(u) are recomputed in the backward rather than stored (one erf per element,
/// cheaper than 2·N·D extra floats of traffic). CPU twin of kernels/NegDistill.Kernels/NatKernels.cs.
/// </summary>
public static class Integration
{
    /// <summary>Width of the unit's projections in method.md (Q: d_in → 128, K, U1: d_out → 128).</summary>
    public const int UnitDim = 128;

    /// <summary>Softmax weight of the negative branch from the two scores (already divided by T),
    /// written as a logistic so that it never overflows. <see cref="NegWeightF"/> is the float form the
    /// kernel and the fp32 twin share; T = double runs the same formula in double.</summary>
    public static T NegWeight<T>(T lPos, T lNeg) where T : IFloatingPointIeee754<T> =>
        typeof(T) == typeof(float) ? T.CreateTruncating(NegWeightF(float.CreateTruncating(lPos), float.CreateTruncating(lNeg)))
            : T.One / (T.One + T.Exp(lPos - lNeg));

    /// <summary><see cref="NegWeight{T}"/> in float: the ILGPU kernel (NatKernels) and the fp32 CPU twin.</summary>
    public static float NegWeightF(float lPos, float lNeg) => 1f / (1f + MathF.Exp(lPos - lNeg));

    /// <param name="mix">(N,D) out</param><param name="aNeg">(N) out</param>
    /// <param name="q">(N,D)</param><param name="kPos">(N,D)</param><param name="kNeg">(N,D)</param>
    /// <param name="uPos">(N,D) pre-GELU</param><param name="uNeg">(N,D) pre-GELU</param>
    public static void Forward<T>(Span<T> mix, Span<T> aNeg, ReadOnlySpan<T> q, ReadOnlySpan<T> kPos, ReadOnlySpan<T> kNeg,
        ReadOnlySpan<T> uPos, ReadOnlySpan<T> uNeg, int n, int d, T beta, T invTemp)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        T two = T.CreateTruncating(2);
        for (int i = 0; i < n; i++)
        {
            int o = i * d;
            T sp = T.Zero, sn = T.Zero;
            for (int j = 0; j < d; j++) { sp += q[o + j] * kPos[o + j]; sn += q[o + j] * kNeg[o + j]; }
            T a = NegWeight(sp * invTemp, sn * invTemp);
            aNeg[i] = a;
            T alpha = two * beta * a - beta;
            for (int j = 0; j < d; j++)
                mix[o + j] = (T.One - alpha) * Gelu.Forward(uPos[o + j]) + alpha * Gelu.Forward(uNeg[o + j]);
        }
    }

    /// <summary>Accumulates (+=) into dq, dkPos, dkNeg, duPos, duNeg, all (N,D).</summary>
    /// <param name="dmix">(N,D) = dy·U2</param><param name="aNeg">(N) from the forward</param>
    public static void Backward<T>(Span<T> dq, Span<T> dkPos, Span<T> dkNeg, Span<T> duPos, Span<T> duNeg,
        ReadOnlySpan<T> dmix, ReadOnlySpan<T> q, ReadOnlySpan<T> kPos, ReadOnlySpan<T> kNeg,
        ReadOnlySpan<T> uPos, ReadOnlySpan<T> uNeg, ReadOnlySpan<T> aNeg, int n, int d, T beta, T invTemp)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        T two = T.CreateTruncating(2);
        for (int i = 0; i < n; i++)
        {
            int o = i * d;
            T a = aNeg[i], alpha = two * beta * a - beta;
            T dAlpha = T.Zero;
            for (int j = 0; j < d; j++)
            {
                T g = dmix[o + j], up = uPos[o + j], un = uNeg[o + j];
                dAlpha += g * (Gelu.Forward(un) - Gelu.Forward(up));
                duPos[o + j] += (T.One - alpha) * g * Gelu.Grad(up);
                duNeg[o + j] += alpha * g * Gelu.Grad(un);
            }
            T dlNeg = two * beta * dAlpha * a * (T.One - a) * invTemp;   // already times 1/T
            T dlPos = -dlNeg;
            for (int j = 0; j < d; j++)
            {
                T qj = q[o + j];
                dq[o + j] += dlPos * kPos[o + j] + dlNeg * kNeg[o + j];
                dkPos[o + j] += dlPos * qj;
                dkNeg[o + j] += dlNeg * qj;
            }
        }
    }
}
