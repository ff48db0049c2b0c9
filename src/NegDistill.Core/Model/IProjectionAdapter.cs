using NegDistill.Runtime;

namespace NegDistill.Model;

/// <summary>The seven linear projections of a LLaMA layer, by their Hugging Face module names.</summary>
public enum Proj { q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj }

/// <summary>What an adapter needs to know about the current pass.</summary>
public sealed class PassContext
{
    /// <summary>Dropout and other training-only behaviour is on.</summary>
    public bool Training { get; set; }
    /// <summary>Seed of this optimiser step's random draws (dropout masks); the same value must be seen
    /// by a layer's forward, its recomputed forward and its backward.</summary>
    public ulong StepSeed { get; set; }
}

/// <summary>
/// Something that modifies one projection y = x·Wᵀ of one layer: LoRA, NAT's pair of LoRAs with the
/// dynamic integration unit. Forward receives y = x·Wᵀ already computed and adds its contribution;
/// backward accumulates into dx and its own parameter gradients (the frozen W's part of dx is done
/// by the model).
/// </summary>
public interface IProjectionAdapter : IDisposable
{
    /// <param name="x">(N,in)</param><param name="y">(N,out) holds x·Wᵀ on entry</param>
    void Forward(PassContext ctx, Tensor x, Tensor y, int n);
    /// <param name="dy">(N,out)</param><param name="dx">(N,in) +=</param>
    void Backward(PassContext ctx, Tensor x, Tensor dy, Tensor dx, int n);
    IEnumerable<Param> Parameters { get; }
    /// <summary>Allocates the row buffers for up to <paramref name="rows"/> rows now (forward only unless
    /// <paramref name="training"/>), so that later calls never grow them (the KV cache reserves its row
    /// limit; the memory planner counts exactly this).</summary>
    void Reserve(int rows, bool training);
}
