namespace NegDistill.Checkpoints;

/// <summary>Read access to a set of named tensors, from one safetensors file or a sharded checkpoint.</summary>
public interface ITensorSource : IDisposable
{
    /// <summary>Tensor names in the order the file (or index) lists them.</summary>
    IReadOnlyList<string> Names { get; }

    IReadOnlyDictionary<string, string> Metadata { get; }

    bool Contains(string name);

    /// <summary>Dtype, shape and byte range of a tensor; throws <see cref="CheckpointFormatException"/> (MissingTensor) if absent.</summary>
    TensorInfo Info(string name);

    /// <summary>Reads one tensor in its stored type.</summary>
    StoredTensor Read(string name);

    /// <summary>Reads one tensor converted to float into <paramref name="destination"/>, which must hold exactly its element count.</summary>
    void ReadFloat32(string name, Span<float> destination);

    /// <summary>Reads one tensor converted to float.</summary>
    float[] ReadFloat32(string name);
}
