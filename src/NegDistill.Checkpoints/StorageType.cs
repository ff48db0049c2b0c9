namespace NegDistill.Checkpoints;

/// <summary>
/// Element types a stored tensor may have. All are little-endian on disk.
/// F16 and BF16 are raw 16-bit words: F16 is IEEE 754 binary16, BF16 is the upper half of an IEEE binary32.
/// F64, I32 and I64 are read (and written back verbatim) so that foreign checkpoints open; conversion from
/// float is offered for F32, F16, BF16 and F64.
/// </summary>
public enum StorageType
{
    F32,
    F16,
    BF16,
    F64,
    I32,
    I64,
}

public static class StorageTypes
{
    /// <summary>Bytes per element.</summary>
    public static int ElementSize(this StorageType type) => type switch
    {
        StorageType.F32 => 4,
        StorageType.F16 => 2,
        StorageType.BF16 => 2,
        StorageType.F64 => 8,
        StorageType.I32 => 4,
        StorageType.I64 => 8,
        _ => throw new ArgumentOutOfRangeException(nameof(type), type, "unknown storage type"),
    };

    /// <summary>The dtype string used in a safetensors header ("F32", "BF16", ...).</summary>
    public static string DtypeName(this StorageType type) => type switch
    {
        StorageType.F32 => "F32",
        StorageType.F16 => "F16",
        StorageType.BF16 => "BF16",
        StorageType.F64 => "F64",
        StorageType.I32 => "I32",
        StorageType.I64 => "I64",
        _ => throw new ArgumentOutOfRangeException(nameof(type), type, "unknown storage type"),
    };

    /// <summary>Parses a safetensors dtype string (case-sensitive, as the format spells it).</summary>
    public static bool TryParseDtype(string dtype, out StorageType type)
    {
        switch (dtype)
        {
            case "F32": type = StorageType.F32; return true;
            case "F16": type = StorageType.F16; return true;
            case "BF16": type = StorageType.BF16; return true;
            case "F64": type = StorageType.F64; return true;
            case "I32": type = StorageType.I32; return true;
            case "I64": type = StorageType.I64; return true;
            default: type = default; return false;
        }
    }

    /// <summary>True for the kinds <see cref="StoredTensor.FromFloat32"/> can produce.</summary>
    public static bool IsFloatingPoint(this StorageType type) =>
        type is StorageType.F32 or StorageType.F16 or StorageType.BF16 or StorageType.F64;
}
