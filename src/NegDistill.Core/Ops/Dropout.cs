using System.Numerics;
using NegDistill.Runtime;
namespace NegDistill.Ops;

/// <summary>
/// Inverted dropout with a counter-based mask: element i is kept when Uniform(seed, i) ≥ p and then
/// scaled by 1/(1−p). The backward redraws the same mask from the seed instead of storing it.
/// Used on the LoRA input (method.md: dropout 0.05). CPU twin of kernels/.../DropoutKernels.cs.
/// </summary>
public static class Dropout
{
    public static float MaskScale(float p, ulong seed, long i) => CounterRng.Uniform(seed, (ulong)i) >= p ? 1f / (1f - p) : 0f;

    public static void Forward<T>(Span<T> y, ReadOnlySpan<T> x, float p, ulong seed, long n)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        for (long i = 0; i < n; i++) y[(int)i] = p <= 0f ? x[(int)i] : x[(int)i] * T.CreateTruncating(MaskScale(p, seed, i));
    }

    public static void Backward<T>(Span<T> dx, ReadOnlySpan<T> dy, float p, ulong seed, long n)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        for (long i = 0; i < n; i++) dx[(int)i] += p <= 0f ? dy[(int)i] : dy[(int)i] * T.CreateTruncating(MaskScale(p, seed, i));
    }
}
