using System.Numerics;
using System.Numerics.Tensors;
namespace NegDistill.Ops;

/// <summary>
/// LM head loss: softmax cross-entropy fused with its gradient. Per row i with target y:
///   loss_i = logsumexp(z_i) − z_iy,   dz_i = weight · (softmax(z_i) − onehot(y)).
/// The gradient overwrites the logits row in place, so a chunk of logits is the only N×V buffer
/// (the probabilities are never stored separately). Rows with y &lt; 0 are outside the loss mask.
/// CPU twin of kernels/NegDistill.Kernels/CrossEntropyKernels.cs.
/// </summary>
public static class CrossEntropy
{
    /// <param name="logits">(N,V) in: logits; out (when computeGrad): dlogits</param>
    /// <param name="losses">(N)</param><param name="targets">(N)</param>
    public static void Fused<T>(Span<T> logits, Span<T> losses, ReadOnlySpan<int> targets, int n, int v, T weight, bool computeGrad)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        for (int i = 0; i < n; i++)
        {
            var z = logits.Slice(i * v, v);
            int y = targets[i];
            if (y < 0)
            {
                losses[i] = T.Zero;
                if (computeGrad) z.Clear();
                continue;
            }
            if (y >= v) throw new ArgumentOutOfRangeException(nameof(targets), $"target {y} at row {i} is outside the vocabulary of {v}");
            T max = TensorPrimitives.Max<T>(z);
            T sum = T.Zero;
            for (int j = 0; j < v; j++) sum += T.Exp(z[j] - max);
            T lse = max + T.Log(sum);
            losses[i] = lse - z[y];
            if (!computeGrad) continue;
            T inv = T.One / sum;
            for (int j = 0; j < v; j++) z[j] = weight * T.Exp(z[j] - max) * inv;
            z[y] -= weight;
        }
    }
}
