namespace NegDistill.Checkpoints;

/// <summary>What was wrong with a checkpoint file, so callers and tests can tell failures apart without parsing messages.</summary>
public enum CheckpointErrorKind
{
    /// <summary>The file ends before the data its header describes (or before the 8-byte length prefix).</summary>
    Truncated,
    /// <summary>The header length prefix points past the end of the file or exceeds the header size limit.</summary>
    HeaderLengthOutOfRange,
    /// <summary>The header (or an index / config file) is not valid JSON.</summary>
    InvalidJson,
    /// <summary>The header is JSON but does not have the structure the format requires.</summary>
    InvalidHeader,
    /// <summary>A tensor's dtype is not one this library reads.</summary>
    UnknownDtype,
    /// <summary>A tensor's data_offsets have begin after end, or reach outside the data section.</summary>
    OffsetsOutOfRange,
    /// <summary>Two tensors' byte ranges overlap.</summary>
    OverlappingOffsets,
    /// <summary>The shape times the element size disagrees with the byte range.</summary>
    ShapeMismatch,
    /// <summary>The same tensor name appears twice.</summary>
    DuplicateTensor,
    /// <summary>A requested tensor (or one the index promises) is not in the file.</summary>
    MissingTensor,
    /// <summary>A file the checkpoint needs (a shard, the index, the weights) does not exist.</summary>
    MissingFile,
    /// <summary>model.safetensors.index.json is structurally wrong.</summary>
    InvalidIndex,
    /// <summary>A tensor name does not follow the expected naming scheme.</summary>
    InvalidName,
    /// <summary>
    /// An adapter tensor disagrees with its config or its partners: its shape does not fit the LoRA rank or the
    /// module it adapts, the module is not in target_modules, or a lora_A has no lora_B (or the reverse).
    /// </summary>
    AdapterMismatch,
    /// <summary>adapter_config.json is structurally wrong or describes something other than LoRA.</summary>
    InvalidConfig,
    /// <summary>A training-state file is structurally wrong.</summary>
    InvalidTrainingState,
}

/// <summary>
/// A checkpoint file is malformed or inconsistent. The message always names the file (when one is involved)
/// and the tensor (when one is involved); both are also available as properties.
/// </summary>
public sealed class CheckpointFormatException : Exception
{
    public CheckpointFormatException(CheckpointErrorKind kind, string? filePath, string? tensorName, string detail, Exception? inner = null)
        : base(Compose(filePath, tensorName, detail), inner)
    {
        (Kind, FilePath, TensorName, Detail) = (kind, filePath, tensorName, detail);
    }

    public CheckpointErrorKind Kind { get; }

    /// <summary>The file the problem was found in, or null when no file is involved (e.g. validating before a save).</summary>
    public string? FilePath { get; }

    /// <summary>The tensor concerned, or null when the problem is not about one tensor.</summary>
    public string? TensorName { get; }

    /// <summary>The description of the problem without the file and tensor prefix.</summary>
    public string Detail { get; }

    private static string Compose(string? filePath, string? tensorName, string detail)
    {
        var prefix = filePath is null ? "" : $"checkpoint file '{filePath}': ";
        var tensor = tensorName is null ? "" : $"tensor '{tensorName}': ";
        return prefix + tensor + detail;
    }
}
