namespace NegDistill.Runtime;

/// <summary>Element type of a tensor's storage. Compute is always fp32; 16-bit kinds are frozen weights
/// kept as raw little-endian words and widened inside the matmul.</summary>
public enum DType { F32, F16, BF16, I32 }

/// <summary>A tensor owned by one backend: a name (for error messages), a shape and its storage.
/// Row-major; the last dimension is contiguous.</summary>
public abstract class Tensor : IDisposable
{
    protected Tensor(string name, DType dtype, int[] shape)
    {
        if (shape.Length == 0) throw new ArgumentException($"tensor '{name}': empty shape");
        long n = 1;
        foreach (int d in shape)
        {
            if (d <= 0) throw new ArgumentException($"tensor '{name}': dimension {d} in shape [{string.Join(",", shape)}] must be positive");
            n *= d;
        }
        Name = name; DType = dtype; Shape = shape; Length = n;
    }

    public string Name { get; }
    public DType DType { get; }
    public int[] Shape { get; }
    public long Length { get; }
    public int Dim(int i) => Shape[i < 0 ? Shape.Length + i : i];
    public long Bytes => Length * (DType is DType.F16 or DType.BF16 ? 2 : 4);
    public override string ToString() => $"{Name}[{string.Join(",", Shape)}]:{DType}";
    public abstract void Dispose();

    /// <summary>Throws unless the tensor has exactly <paramref name="expected"/> elements.</summary>
    public Tensor Expect(long expected, string role)
    {
        if (Length < expected)
            throw new ArgumentException($"{role}: tensor {this} has {Length} elements, the op needs {expected}");
        return this;
    }
}
