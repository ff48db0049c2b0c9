using NegDistill.Runtime;

namespace NegDistill.Model;

/// <summary>
/// A loss over the LM head's logits, consumed chunk by chunk: <see cref="Chunk"/> receives
/// logits (rows,V) for rows [row0, row0+rows) and, when computing gradients, overwrites them with
/// dL/dlogits. Stages differ only in their head (cross-entropy, NCE's calibrated distillation,
/// unlikelihood, ...), never in the training loop.
/// </summary>
public interface ILossHead
{
    void Begin(LlamaModel model, ModelBatch batch);
    void Chunk(LlamaModel model, Tensor logits, int row0, int rows, bool backward);
    /// <summary>The batch's loss (mean over loss tokens for token losses).</summary>
    double End(LlamaModel model);
}

/// <summary>Next-token cross-entropy averaged over the tokens with a target (fused kernel).</summary>
public sealed class CrossEntropyHead : ILossHead
{
    double _weight;
    int _count;
    public int LossTokens => _count;

    public void Begin(LlamaModel model, ModelBatch batch)
    {
        _count = batch.LossTokens;
        _weight = _count > 0 ? 1.0 / _count : 0;
    }

    public void Chunk(LlamaModel model, Tensor logits, int row0, int rows, bool backward)
    {
        var ops = model.Ops;
        ops.CrossEntropyFused(logits, ops.View(model.LossesTensor, row0, rows), ops.View(model.TargetsTensor, row0, rows),
            rows, model.Config.Vocab, _weight, backward);
    }

    public double End(LlamaModel model)
    {
        return _count > 0 ? model.Ops.Sum(model.LossesTensor, model.Rows) / _count : 0;
    }
}

/// <summary>A loss on the final normed hidden states (N,C) rather than on the LM head's logits
/// (sequence classifiers such as the ranking model). When <c>dHidden</c> is given (zeroed), the head
/// writes dL/dhidden into it and accumulates its own parameters' gradients.</summary>
public interface IHiddenHead
{
    double Run(LlamaModel model, ModelBatch batch, Tensor hidden, Tensor? dHidden);
    IEnumerable<Param> Parameters { get; }
}
