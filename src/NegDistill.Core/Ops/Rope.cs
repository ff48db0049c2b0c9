using System.Numerics;
namespace NegDistill.Ops;

/// <summary>
/// Rotary position embedding, rotate-half pairing as in Hugging Face LLaMA checkpoints: within each
/// head, element i pairs with i + hd/2 and is rotated by angle pos·θ^(−2i/hd):
///   y_i = x_i cos − x_{i+hd/2} sin,   y_{i+hd/2} = x_{i+hd/2} cos + x_i sin.
/// The backward is the transposed rotation (sin → −sin). In place.
/// CPU twin of kernels/NegDistill.Kernels/RopeKernels.cs.
/// </summary>
public static class Rope
{
    /// <summary>The inverse frequency of pair i, computed in fp32 as transformers does.</summary>
    public static float InvFreq(int i, int headDim, float theta) => 1f / MathF.Pow(theta, (2 * i) / (float)headDim);

    /// <param name="x">(N, H·hd) in place</param><param name="pos">(N) absolute positions</param>
    public static void Apply<T>(Span<T> x, ReadOnlySpan<int> pos, int n, int nHeads, int headDim, float theta, bool inverse)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int half = headDim / 2, c = nHeads * headDim;
        for (int r = 0; r < n; r++)
        {
            for (int i = 0; i < half; i++)
            {
                float ang = pos[r] * InvFreq(i, headDim, theta);
                T cs = T.CreateTruncating(MathF.Cos(ang));
                T sn = T.CreateTruncating(inverse ? -MathF.Sin(ang) : MathF.Sin(ang));
                for (int h = 0; h < nHeads; h++)
                {
                    int o = r * c + h * headDim + i;
                    T x1 = x[o], x2 = x[o + half];
                    x[o] = x1 * cs - x2 * sn;
                    x[o + half] = x2 * cs + x1 * sn;
                }
            }
        }
    }
}
