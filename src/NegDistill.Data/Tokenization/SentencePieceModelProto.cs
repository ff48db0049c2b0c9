using System.Buffers.Binary;
using System.Text;

namespace NegDistill.Data;

/// <summary>Piece types of SentencePiece's <c>ModelProto.SentencePiece.Type</c>.</summary>
public enum SentencePieceType
{
    Normal = 1,
    Unknown = 2,
    Control = 3,
    UserDefined = 4,
    Unused = 5,
    Byte = 6,
}

/// <summary>SentencePiece's <c>TrainerSpec.ModelType</c>.</summary>
public enum SentencePieceModelType
{
    Unigram = 1,
    Bpe = 2,
    Word = 3,
    Char = 4,
}

/// <summary>One vocabulary entry.</summary>
public sealed record SentencePieceEntry(string Piece, float Score, SentencePieceType Type);

/// <summary>
/// The parts of SentencePiece's <c>ModelProto</c> (google/sentencepiece, <c>sentencepiece_model.proto</c>)
/// that decide encoding and decoding, with a protobuf writer and reader of their own (no generated
/// code). Field numbers: ModelProto pieces=1, trainer_spec=2, normalizer_spec=3; SentencePiece
/// piece=1, score=2, type=3; TrainerSpec model_type=3, vocab_size=4, split_digits=25,
/// allow_whitespace_only_pieces=26, byte_fallback=35, unk_id..pad_id=40..43, unk_surface=44,
/// unk_piece..pad_piece=45..48, treat_whitespace_as_suffix=24; NormalizerSpec name=1,
/// precompiled_charsmap=2, add_dummy_prefix=3, remove_extra_whitespaces=4, escape_whitespaces=5.
/// </summary>
public sealed class SentencePieceModelProto
{
    public List<SentencePieceEntry> Pieces { get; } = new();

    public SentencePieceModelType ModelType { get; set; } = SentencePieceModelType.Bpe;

    public bool ByteFallback { get; set; }

    public bool SplitDigits { get; set; }

    public bool AllowWhitespaceOnlyPieces { get; set; }

    public bool TreatWhitespaceAsSuffix { get; set; }

    public int UnkId { get; set; }

    public int BosId { get; set; } = 1;

    public int EosId { get; set; } = 2;

    public int PadId { get; set; } = -1;

    public string UnkPiece { get; set; } = "<unk>";

    public string BosPiece { get; set; } = "<s>";

    public string EosPiece { get; set; } = "</s>";

    public string PadPiece { get; set; } = "<pad>";

    public string UnkSurface { get; set; } = " \u2047 ";

    public string NormalizerName { get; set; } = "identity";

    public byte[] PrecompiledCharsmap { get; set; } = [];

    public bool AddDummyPrefix { get; set; } = true;

    public bool RemoveExtraWhitespaces { get; set; }

    public bool EscapeWhitespaces { get; set; } = true;

    /// <summary>Serialises as a <c>tokenizer.model</c> file. Every field is written explicitly (proto2
    /// defaults such as remove_extra_whitespaces=true must not apply by omission).</summary>
    public byte[] ToBytes()
    {
        var w = new ProtoWriter();
        foreach (SentencePieceEntry p in Pieces)
        {
            var pw = new ProtoWriter();
            pw.String(1, p.Piece);
            pw.Float(2, p.Score);
            pw.Varint(3, (ulong)(int)p.Type);
            w.Bytes(1, pw.ToArray());
        }

        var t = new ProtoWriter();
        t.Varint(3, (ulong)(int)ModelType);
        t.Varint(4, (ulong)Pieces.Count);
        t.Bool(24, TreatWhitespaceAsSuffix);
        t.Bool(25, SplitDigits);
        t.Bool(26, AllowWhitespaceOnlyPieces);
        t.Bool(35, ByteFallback);
        t.Int32(40, UnkId);
        t.Int32(41, BosId);
        t.Int32(42, EosId);
        t.Int32(43, PadId);
        t.String(44, UnkSurface);
        t.String(45, UnkPiece);
        t.String(46, BosPiece);
        t.String(47, EosPiece);
        t.String(48, PadPiece);
        w.Bytes(2, t.ToArray());

        var n = new ProtoWriter();
        n.String(1, NormalizerName);
        n.Bytes(2, PrecompiledCharsmap);
        n.Bool(3, AddDummyPrefix);
        n.Bool(4, RemoveExtraWhitespaces);
        n.Bool(5, EscapeWhitespaces);
        w.Bytes(3, n.ToArray());
        return w.ToArray();
    }

    public void WriteTo(Stream stream)
    {
        byte[] bytes = ToBytes();
        stream.Write(bytes, 0, bytes.Length);
    }

    /// <summary>Reads a <c>tokenizer.model</c>; fields this class does not model are skipped, and absent ones take the proto2 defaults.</summary>
    public static SentencePieceModelProto Parse(ReadOnlySpan<byte> data)
    {
        var m = new SentencePieceModelProto
        {
            // proto2 defaults of sentencepiece_model.proto, overwritten by fields present in the file.
            ModelType = SentencePieceModelType.Unigram,
            RemoveExtraWhitespaces = true,
            AddDummyPrefix = true,
            EscapeWhitespaces = true,
            UnkId = 0,
            BosId = 1,
            EosId = 2,
            PadId = -1,
            NormalizerName = "",
        };
        var r = new ProtoReader(data);
        while (r.Next(out int field, out int wire))
        {
            switch (field)
            {
                case 1 when wire == 2:
                    m.Pieces.Add(ParsePiece(r.LengthDelimited()));
                    break;
                case 2 when wire == 2:
                    ParseTrainer(r.LengthDelimited(), m);
                    break;
                case 3 when wire == 2:
                    ParseNormalizer(r.LengthDelimited(), m);
                    break;
                default:
                    r.Skip(wire);
                    break;
            }
        }

        return m;
    }

    private static SentencePieceEntry ParsePiece(ReadOnlySpan<byte> data)
    {
        string piece = "";
        float score = 0;
        var type = SentencePieceType.Normal;
        var r = new ProtoReader(data);
        while (r.Next(out int field, out int wire))
        {
            switch (field)
            {
                case 1 when wire == 2: piece = Encoding.UTF8.GetString(r.LengthDelimited()); break;
                case 2 when wire == 5: score = r.Fixed32Float(); break;
                case 3 when wire == 0: type = (SentencePieceType)(int)r.Varint(); break;
                default: r.Skip(wire); break;
            }
        }

        return new SentencePieceEntry(piece, score, type);
    }

    private static void ParseTrainer(ReadOnlySpan<byte> data, SentencePieceModelProto m)
    {
        var r = new ProtoReader(data);
        while (r.Next(out int field, out int wire))
        {
            switch (field)
            {
                case 3 when wire == 0: m.ModelType = (SentencePieceModelType)(int)r.Varint(); break;
                case 24 when wire == 0: m.TreatWhitespaceAsSuffix = r.Varint() != 0; break;
                case 25 when wire == 0: m.SplitDigits = r.Varint() != 0; break;
                case 26 when wire == 0: m.AllowWhitespaceOnlyPieces = r.Varint() != 0; break;
                case 35 when wire == 0: m.ByteFallback = r.Varint() != 0; break;
                case 40 when wire == 0: m.UnkId = (int)r.Varint(); break;
                case 41 when wire == 0: m.BosId = (int)r.Varint(); break;
                case 42 when wire == 0: m.EosId = (int)r.Varint(); break;
                case 43 when wire == 0: m.PadId = (int)r.Varint(); break;
                case 44 when wire == 2: m.UnkSurface = Encoding.UTF8.GetString(r.LengthDelimited()); break;
                case 45 when wire == 2: m.UnkPiece = Encoding.UTF8.GetString(r.LengthDelimited()); break;
                case 46 when wire == 2: m.BosPiece = Encoding.UTF8.GetString(r.LengthDelimited()); break;
                case 47 when wire == 2: m.EosPiece = Encoding.UTF8.GetString(r.LengthDelimited()); break;
                case 48 when wire == 2: m.PadPiece = Encoding.UTF8.GetString(r.LengthDelimited()); break;
                default: r.Skip(wire); break;
            }
        }
    }

    private static void ParseNormalizer(ReadOnlySpan<byte> data, SentencePieceModelProto m)
    {
        var r = new ProtoReader(data);
        while (r.Next(out int field, out int wire))
        {
            switch (field)
            {
                case 1 when wire == 2: m.NormalizerName = Encoding.UTF8.GetString(r.LengthDelimited()); break;
                case 2 when wire == 2: m.PrecompiledCharsmap = r.LengthDelimited().ToArray(); break;
                case 3 when wire == 0: m.AddDummyPrefix = r.Varint() != 0; break;
                case 4 when wire == 0: m.RemoveExtraWhitespaces = r.Varint() != 0; break;
                case 5 when wire == 0: m.EscapeWhitespaces = r.Varint() != 0; break;
                default: r.Skip(wire); break;
            }
        }
    }

    /// <summary>Minimal protobuf encoder (varint, fixed32, length-delimited).</summary>
    private sealed class ProtoWriter
    {
        private readonly MemoryStream _ms = new();

        public void Varint(int field, ulong value)
        {
            Tag(field, 0);
            Raw(value);
        }

        public void Int32(int field, int value) => Varint(field, unchecked((ulong)(long)value)); // negatives: 10-byte sign extension, as protobuf does

        public void Bool(int field, bool value) => Varint(field, value ? 1UL : 0UL);

        public void Float(int field, float value)
        {
            Tag(field, 5);
            Span<byte> b = stackalloc byte[4];
            BinaryPrimitives.WriteSingleLittleEndian(b, value);
            _ms.Write(b);
        }

        public void String(int field, string value) => Bytes(field, Encoding.UTF8.GetBytes(value));

        public void Bytes(int field, ReadOnlySpan<byte> value)
        {
            Tag(field, 2);
            Raw((ulong)value.Length);
            _ms.Write(value);
        }

        public byte[] ToArray() => _ms.ToArray();

        private void Tag(int field, int wire) => Raw(((ulong)field << 3) | (uint)wire);

        private void Raw(ulong v)
        {
            while (v >= 0x80)
            {
                _ms.WriteByte((byte)(v | 0x80));
                v >>= 7;
            }

            _ms.WriteByte((byte)v);
        }
    }

    /// <summary>Minimal protobuf decoder.</summary>
    private ref struct ProtoReader
    {
        private readonly ReadOnlySpan<byte> _data;
        private int _pos;

        public ProtoReader(ReadOnlySpan<byte> data)
        {
            _data = data;
            _pos = 0;
        }

        public bool Next(out int field, out int wire)
        {
            if (_pos >= _data.Length)
            {
                field = 0;
                wire = 0;
                return false;
            }

            ulong tag = Varint();
            field = (int)(tag >> 3);
            wire = (int)(tag & 7);
            return true;
        }

        public ulong Varint()
        {
            ulong result = 0;
            for (int shift = 0; shift < 64; shift += 7)
            {
                if (_pos >= _data.Length)
                {
                    throw new InvalidDataException("truncated varint in SentencePiece model");
                }

                byte b = _data[_pos++];
                result |= (ulong)(b & 0x7F) << shift;
                if ((b & 0x80) == 0)
                {
                    return result;
                }
            }

            throw new InvalidDataException("varint longer than 10 bytes in SentencePiece model");
        }

        public float Fixed32Float()
        {
            if (_pos + 4 > _data.Length)
            {
                throw new InvalidDataException("truncated fixed32 in SentencePiece model");
            }

            float f = BinaryPrimitives.ReadSingleLittleEndian(_data.Slice(_pos, 4));
            _pos += 4;
            return f;
        }

        public ReadOnlySpan<byte> LengthDelimited()
        {
            int len = checked((int)Varint());
            if (len < 0 || _pos + len > _data.Length)
            {
                throw new InvalidDataException("truncated length-delimited field in SentencePiece model");
            }

            ReadOnlySpan<byte> s = _data.Slice(_pos, len);
            _pos += len;
            return s;
        }

        public void Skip(int wire)
        {
            switch (wire)
            {
                case 0: Varint(); break;
                case 1: _pos += 8; break;
                case 2: LengthDelimited(); break;
                case 5: _pos += 4; break;
                default: throw new InvalidDataException($"unsupported protobuf wire type {wire} in SentencePiece model");
            }

            if (_pos > _data.Length)
            {
                throw new InvalidDataException("truncated field in SentencePiece model");
            }
        }
    }
}
