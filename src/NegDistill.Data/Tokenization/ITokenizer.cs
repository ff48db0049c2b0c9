using System.Text;

namespace NegDistill.Data;

/// <summary>A tokenizer as the trainer sees it.</summary>
public interface ITokenizer
{
    /// <summary>Number of ids (all ids are in [0, VocabSize)).</summary>
    int VocabSize { get; }

    /// <summary>Beginning-of-sequence id.</summary>
    int BosId { get; }

    /// <summary>End-of-sequence id.</summary>
    int EosId { get; }

    /// <summary>Id used for right padding (masked out by the attention mask).</summary>
    int PadId { get; }

    /// <summary>Encodes text; special-token text in the input is not parsed as special tokens.</summary>
    int[] Encode(string text, bool addBos, bool addEos);

    /// <summary>Decodes ids to text; BOS, EOS and PAD are skipped.</summary>
    string Decode(ReadOnlySpan<int> ids);
}

/// <summary>
/// A byte-level tokenizer for tiny models on CPU: the UTF-8 bytes of the text, one id per byte.
/// Ids: 0..255 = the byte with that value; 256 = BOS; 257 = EOS; 258 = PAD; <see cref="VocabSize"/> = 259.
/// Encoding rejects text that is not valid UTF-16 (a lone surrogate), so decode(encode(s)) == s always.
/// </summary>
public sealed class ByteTokenizer : ITokenizer
{
    public const int ByteCount = 256;
    public const int Bos = 256;
    public const int Eos = 257;
    public const int Pad = 258;

    private static readonly UTF8Encoding Strict = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);
    private static readonly UTF8Encoding Lenient = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: false);

    public int VocabSize => 259;

    public int BosId => Bos;

    public int EosId => Eos;

    public int PadId => Pad;

    public int[] Encode(string text, bool addBos, bool addEos)
    {
        ArgumentNullException.ThrowIfNull(text);
        byte[] bytes = Strict.GetBytes(text);
        int n = bytes.Length + (addBos ? 1 : 0) + (addEos ? 1 : 0);
        int[] ids = new int[n];
        int k = 0;
        if (addBos)
        {
            ids[k++] = Bos;
        }

        foreach (byte b in bytes)
        {
            ids[k++] = b;
        }

        if (addEos)
        {
            ids[k] = Eos;
        }

        return ids;
    }

    /// <summary>Bytes are joined and read as UTF-8 (an invalid sequence, e.g. a cut-off character, becomes U+FFFD); specials are skipped; any other id throws.</summary>
    public string Decode(ReadOnlySpan<int> ids)
    {
        byte[] bytes = new byte[ids.Length];
        int n = 0;
        foreach (int id in ids)
        {
            if ((uint)id < ByteCount)
            {
                bytes[n++] = (byte)id;
            }
            else if (id is not (Bos or Eos or Pad))
            {
                throw new ArgumentOutOfRangeException(nameof(ids), $"id {id} is outside the byte tokenizer's vocabulary (0..258)");
            }
        }

        return Lenient.GetString(bytes, 0, n);
    }
}
