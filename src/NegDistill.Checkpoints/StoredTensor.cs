using System.Buffers.Binary;
using System.Runtime.InteropServices;

namespace NegDistill.Checkpoints;

/// <summary>
/// A named tensor held in memory as raw little-endian bytes in its storage type.
/// The byte array is used as given (not copied); the shape is copied.
/// A single tensor is limited to what one .NET array can hold (about 2 GiB).
/// </summary>
public sealed class StoredTensor
{
    private readonly long[] _shape;

    public StoredTensor(string name, StorageType type, IReadOnlyList<long> shape, byte[] data)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentNullException.ThrowIfNull(shape);
        ArgumentNullException.ThrowIfNull(data);
        _ = type.ElementSize(); // rejects undefined enum values
        _shape = shape.ToArray();
        long count = Shapes.ElementCount(_shape, name);
        long expected = checked(count * type.ElementSize());
        if (expected != data.LongLength)
            throw new ArgumentException(
                $"tensor '{name}': shape {Shapes.Format(_shape)} of {type.DtypeName()} needs {expected} bytes but {data.LongLength} were given",
                nameof(data));
        (Name, Type, Data, ElementCount) = (name, type, data, count);
    }

    public string Name { get; }

    public StorageType Type { get; }

    /// <summary>Dimensions, outermost first (row-major). An empty shape is a scalar with one element.</summary>
    public IReadOnlyList<long> Shape => _shape;

    /// <summary>Raw little-endian element bytes, <see cref="ElementCount"/> × element size long.</summary>
    public byte[] Data { get; }

    public long ElementCount { get; }

    public long ByteLength => Data.LongLength;

    /// <summary>A copy of this tensor under another name (sharing the data bytes).</summary>
    public StoredTensor WithName(string name) => new(name, Type, _shape, Data);

    /// <summary>Builds a tensor from floats, narrowing to <paramref name="storeAs"/> (F16 via System.Half, BF16 round-to-nearest-even).</summary>
    public static StoredTensor FromFloat32(string name, IReadOnlyList<long> shape, ReadOnlySpan<float> values, StorageType storeAs = StorageType.F32)
    {
        ArgumentNullException.ThrowIfNull(shape);
        if (!storeAs.IsFloatingPoint())
            throw new ArgumentException($"cannot store floats as {storeAs.DtypeName()}; use F32, F16, BF16 or F64", nameof(storeAs));
        long count = Shapes.ElementCount(shape, name);
        if (count != values.Length)
            throw new ArgumentException($"tensor '{name}': shape {Shapes.Format(shape)} has {count} elements but {values.Length} values were given", nameof(values));
        var data = new byte[checked(count * storeAs.ElementSize())];
        ElementCodec.EncodeFromFloat32(storeAs, values, data);
        return new StoredTensor(name, storeAs, shape, data);
    }

    /// <summary>Builds an F16 or BF16 tensor from raw 16-bit words, stored bit for bit.</summary>
    public static StoredTensor FromRaw16(string name, StorageType type, IReadOnlyList<long> shape, ReadOnlySpan<ushort> words)
    {
        ArgumentNullException.ThrowIfNull(shape);
        if (type is not (StorageType.F16 or StorageType.BF16))
            throw new ArgumentException($"raw 16-bit words need F16 or BF16, not {type.DtypeName()}", nameof(type));
        long count = Shapes.ElementCount(shape, name);
        if (count != words.Length)
            throw new ArgumentException($"tensor '{name}': shape {Shapes.Format(shape)} has {count} elements but {words.Length} words were given", nameof(words));
        var data = new byte[checked(count * 2)];
        for (int i = 0; i < words.Length; i++) BinaryPrimitives.WriteUInt16LittleEndian(data.AsSpan(2 * i), words[i]);
        return new StoredTensor(name, type, shape, data);
    }

    /// <summary>The elements widened (or, for F64/I32/I64, converted) to float. F32 data is copied bit for bit.</summary>
    public float[] ToFloat32()
    {
        var result = new float[ElementCount];
        ElementCodec.DecodeToFloat32(Type, Data, result);
        return result;
    }

    /// <summary>Decodes the elements into <paramref name="destination"/>, which must hold exactly <see cref="ElementCount"/> floats.</summary>
    public void CopyToFloat32(Span<float> destination)
    {
        if (destination.Length != ElementCount)
            throw new ArgumentException($"tensor '{Name}' has {ElementCount} elements but the destination holds {destination.Length}", nameof(destination));
        ElementCodec.DecodeToFloat32(Type, Data, destination);
    }

    /// <summary>The raw 16-bit words of an F16 or BF16 tensor.</summary>
    public ushort[] ToRaw16()
    {
        if (Type is not (StorageType.F16 or StorageType.BF16))
            throw new InvalidOperationException($"tensor '{Name}' is {Type.DtypeName()}, not a 16-bit kind");
        var result = new ushort[ElementCount];
        for (int i = 0; i < result.Length; i++) result[i] = BinaryPrimitives.ReadUInt16LittleEndian(Data.AsSpan(2 * i));
        return result;
    }

    /// <summary>The elements of an I32 or I64 tensor as 64-bit integers.</summary>
    public long[] ToInt64()
    {
        var result = new long[ElementCount];
        switch (Type)
        {
            case StorageType.I32:
                for (int i = 0; i < result.Length; i++) result[i] = BinaryPrimitives.ReadInt32LittleEndian(Data.AsSpan(4 * i));
                break;
            case StorageType.I64:
                if (BitConverter.IsLittleEndian)
                    Data.AsSpan().CopyTo(MemoryMarshal.AsBytes(result.AsSpan()));
                else
                    for (int i = 0; i < result.Length; i++) result[i] = BinaryPrimitives.ReadInt64LittleEndian(Data.AsSpan(8 * i));
                break;
            default:
                throw new InvalidOperationException($"tensor '{Name}' is {Type.DtypeName()}, not an integer kind");
        }
        return result;
    }

    public override string ToString() => $"{Name} {Type.DtypeName()} {Shapes.Format(_shape)}";
}

/// <summary>Where a tensor's bytes lie in a safetensors file, as the header describes it.</summary>
public sealed class TensorInfo
{
    private readonly long[] _shape;

    internal TensorInfo(string name, StorageType type, long[] shape, long dataBegin, long dataEnd, long elementCount)
    {
        (Name, Type, _shape, DataBegin, DataEnd, ElementCount) = (name, type, shape, dataBegin, dataEnd, elementCount);
    }

    public string Name { get; }

    public StorageType Type { get; }

    public IReadOnlyList<long> Shape => _shape;

    /// <summary>Start offset, relative to the start of the data section.</summary>
    public long DataBegin { get; }

    /// <summary>End offset (exclusive), relative to the start of the data section.</summary>
    public long DataEnd { get; }

    public long ByteLength => DataEnd - DataBegin;

    public long ElementCount { get; }

    public override string ToString() => $"{Name} {Type.DtypeName()} {Shapes.Format(_shape)} [{DataBegin}, {DataEnd})";
}

internal static class Shapes
{
    public static long ElementCount(IReadOnlyList<long> shape, string? name)
    {
        long count = 1;
        foreach (long d in shape)
        {
            if (d < 0)
                throw new ArgumentException($"tensor '{name}': shape {Format(shape)} has a negative dimension");
            try { count = checked(count * d); }
            catch (OverflowException) { throw new ArgumentException($"tensor '{name}': shape {Format(shape)} has too many elements"); }
        }
        return count;
    }

    public static string Format(IReadOnlyList<long> shape) => "[" + string.Join(", ", shape) + "]";
}
