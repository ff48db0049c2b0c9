using NegDistill.Runtime;

namespace NegDistill.Model;

/// <summary>A named parameter with, when trainable, its gradient and AdamW moments. The name is
/// the Hugging Face / PEFT tensor name, which is also its name in checkpoints.</summary>
public sealed class Param : IDisposable
{
    public Param(IBackend ops, string name, DType dtype, bool trainable, params int[] shape)
    {
        if (trainable && dtype != DType.F32) throw new ArgumentException($"parameter '{name}': trainable parameters are F32, not {dtype}");
        Name = name;
        W = ops.Alloc(name, dtype, shape);
        if (trainable)
        {
            Grad = ops.Alloc(name + ".grad", DType.F32, shape);
            M = ops.Alloc(name + ".adam_m", DType.F32, shape);
            V = ops.Alloc(name + ".adam_v", DType.F32, shape);
        }
    }

    public string Name { get; }
    public Tensor W { get; }
    public Tensor? Grad { get; }
    public Tensor? M { get; }
    public Tensor? V { get; }
    public bool Trainable => Grad != null;
    public int[] Shape => W.Shape;
    public long Length => W.Length;

    public void Dispose() { W.Dispose(); Grad?.Dispose(); M?.Dispose(); V?.Dispose(); }
}
