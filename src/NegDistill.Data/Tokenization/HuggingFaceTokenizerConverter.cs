using System.Text.Json;
using System.Text.RegularExpressions;

namespace NegDistill.Data;

/// <summary>What a conversion found.</summary>
/// <param name="Pieces">Vocabulary size.</param>
/// <param name="Merges">Merge rules read.</param>
/// <param name="BytePieces">Pieces typed BYTE (&lt;0x00&gt;..&lt;0xFF&gt;).</param>
/// <param name="ControlPieces">Special added tokens typed CONTROL.</param>
/// <param name="UnreachablePieces">Multi-character normal pieces no merge produces (SentencePiece could still form them, the HF model never would; 0 for LLaMA).</param>
/// <param name="MissingSplitMerges">Ways to form a piece from two vocabulary pieces that have no merge rule (SentencePiece considers every such split; 0 when the merges were generated from a SentencePiece model, as LLaMA's were).</param>
public sealed record ConversionReport(int Pieces, int Merges, int BytePieces, int ControlPieces, int UnreachablePieces, int MissingSplitMerges)
{
    /// <summary>True when the SentencePiece model encodes exactly as the HF BPE model does.</summary>
    public bool Exact => UnreachablePieces == 0 && MissingSplitMerges == 0;
}

/// <summary>
/// Converts a Hugging Face <c>tokenizer.json</c> holding a SentencePiece-style BPE (LLaMA's 32,000
/// pieces with byte fallback) into the equivalent SentencePiece <c>ModelProto</c>
/// (<c>tokenizer.model</c>), which <see cref="LlamaSentencePieceTokenizer"/> then loads through
/// Microsoft.ML.Tokenizers.
/// </summary>
/// <remarks>
/// <para>Equivalence: HF's BPE applies the merge with the lowest rank first; SentencePiece's BPE
/// applies the adjacent pair whose concatenation has the highest piece score (ties: leftmost), like
/// HF. Each piece therefore gets the score <c>-(rank of the first merge producing it)</c>. For a
/// merge list generated from a SentencePiece model (every split of a piece into two pieces is a
/// merge, ordered by the piece's score), the two algorithms then choose the same merges;
/// <see cref="ConversionReport"/> counts any piece where that precondition fails. This matters for
/// LLaMA: its whitespace pieces ("▁▁", "▁▁▁▁", ...) come last in the merge list, so runs of spaces
/// merge only after everything else, which a score derived from the id would get wrong.</para>
/// <para>Normalisation: the LLaMA file's <c>Prepend("▁")</c> + <c>Replace(" ", "▁")</c> normaliser
/// (or a <c>Metaspace</c> pre-tokenizer) maps to add_dummy_prefix + escape_whitespaces, with
/// remove_extra_whitespaces off and the "identity" charsmap, as in LLaMA's own model. Other
/// normalisers (NFKC, ...) cannot be expressed without a precompiled charsmap and are refused.</para>
/// <para>Types: the unk token → UNKNOWN, other special added tokens → CONTROL, non-special added
/// tokens → USER_DEFINED, <c>&lt;0xXX&gt;</c> with byte_fallback → BYTE, the rest NORMAL.
/// split_digits is set when no piece holds two ASCII digits (LLaMA was trained with it; it does not
/// change encoding).</para>
/// </remarks>
public static partial class HuggingFaceTokenizerConverter
{
    [GeneratedRegex("^<0x[0-9A-F]{2}>$", RegexOptions.CultureInvariant)]
    private static partial Regex BytePieceRegex();

    /// <summary>Converts a <c>tokenizer.json</c> file.</summary>
    public static SentencePieceModelProto ConvertFile(string tokenizerJsonPath, out ConversionReport report)
    {
        using FileStream fs = File.OpenRead(tokenizerJsonPath);
        try
        {
            return Convert(fs, out report);
        }
        catch (Exception ex) when (ex is JsonException or InvalidDataException or NotSupportedException)
        {
            throw new InvalidDataException($"{tokenizerJsonPath}: {ex.Message}", ex);
        }
    }

    /// <summary>Converts a <c>tokenizer.json</c> file and writes the <c>tokenizer.model</c>.</summary>
    public static ConversionReport ConvertFile(string tokenizerJsonPath, string tokenizerModelPath)
    {
        SentencePieceModelProto model = ConvertFile(tokenizerJsonPath, out ConversionReport report);
        File.WriteAllBytes(tokenizerModelPath, model.ToBytes());
        return report;
    }

    /// <summary>Converts a <c>tokenizer.json</c> stream.</summary>
    public static SentencePieceModelProto Convert(Stream tokenizerJson, out ConversionReport report)
    {
        using JsonDocument doc = JsonDocument.Parse(tokenizerJson, new JsonDocumentOptions { MaxDepth = 256 });
        JsonElement root = doc.RootElement;
        JsonElement model = root.GetProperty("model");
        string type = model.TryGetProperty("type", out JsonElement t) ? t.GetString() ?? "" : "";
        if (type != "BPE")
        {
            throw new NotSupportedException($"tokenizer.json model type '{type}' is not BPE");
        }

        // Vocabulary: piece -> id, ids must be 0..n-1.
        JsonElement vocab = model.GetProperty("vocab");
        int n = 0;
        foreach (JsonProperty _ in vocab.EnumerateObject())
        {
            n++;
        }

        var pieces = new string?[n];
        var ids = new Dictionary<string, int>(n, StringComparer.Ordinal);
        foreach (JsonProperty p in vocab.EnumerateObject())
        {
            int id = p.Value.GetInt32();
            if ((uint)id >= (uint)n || pieces[id] is not null)
            {
                throw new InvalidDataException($"vocab ids are not 0..{n - 1} without gaps (id {id} for '{p.Name}')");
            }

            pieces[id] = p.Name;
            ids[p.Name] = id;
        }

        // Merges: "a b" strings (older files) or ["a", "b"] arrays (newer files).
        var firstRank = new Dictionary<string, int>(StringComparer.Ordinal);
        var mergeSet = new HashSet<(int, int)>();
        int rank = 0;
        foreach (JsonElement m in model.GetProperty("merges").EnumerateArray())
        {
            string left, right;
            if (m.ValueKind == JsonValueKind.String)
            {
                string[] parts = m.GetString()!.Split(' ');
                if (parts.Length != 2)
                {
                    throw new InvalidDataException($"merge {rank} '{m.GetString()}' is not two pieces separated by one space");
                }

                (left, right) = (parts[0], parts[1]);
            }
            else if (m.ValueKind == JsonValueKind.Array && m.GetArrayLength() == 2)
            {
                left = m[0].GetString()!;
                right = m[1].GetString()!;
            }
            else
            {
                throw new InvalidDataException($"merge {rank} is neither \"a b\" nor [a, b]");
            }

            if (!ids.TryGetValue(left, out int li) || !ids.TryGetValue(right, out int ri))
            {
                throw new InvalidDataException($"merge {rank} '{left} {right}' uses a piece outside the vocabulary");
            }

            string merged = left + right;
            if (!ids.ContainsKey(merged))
            {
                throw new InvalidDataException($"merge {rank} '{left} {right}' produces '{merged}', which is not in the vocabulary");
            }

            firstRank.TryAdd(merged, rank);
            mergeSet.Add((li, ri));
            rank++;
        }

        int mergeCount = rank;
        bool byteFallback = model.TryGetProperty("byte_fallback", out JsonElement bf) && bf.ValueKind == JsonValueKind.True;
        string? unk = model.TryGetProperty("unk_token", out JsonElement u) && u.ValueKind == JsonValueKind.String ? u.GetString() : null;

        var special = new Dictionary<int, bool>();
        if (root.TryGetProperty("added_tokens", out JsonElement added) && added.ValueKind == JsonValueKind.Array)
        {
            foreach (JsonElement a in added.EnumerateArray())
            {
                int id = a.GetProperty("id").GetInt32();
                string content = a.GetProperty("content").GetString()!;
                if ((uint)id >= (uint)n || pieces[id] != content)
                {
                    throw new NotSupportedException($"added token '{content}' (id {id}) is not part of the model vocabulary");
                }

                special[id] = a.TryGetProperty("special", out JsonElement sp) && sp.ValueKind == JsonValueKind.True;
            }
        }

        (bool addDummyPrefix, bool escapeWhitespace) = ReadNormalization(root);

        var result = new SentencePieceModelProto
        {
            ModelType = SentencePieceModelType.Bpe,
            ByteFallback = byteFallback,
            AddDummyPrefix = addDummyPrefix,
            EscapeWhitespaces = escapeWhitespace,
            RemoveExtraWhitespaces = false,
            NormalizerName = "identity",
            AllowWhitespaceOnlyPieces = true,
            UnkId = unk is not null && ids.TryGetValue(unk, out int uid) ? uid : 0,
            BosId = ids.TryGetValue("<s>", out int bid) ? bid : -1,
            EosId = ids.TryGetValue("</s>", out int eid) ? eid : -1,
            PadId = ids.TryGetValue("<pad>", out int pid) ? pid : -1,
        };
        result.UnkPiece = pieces[result.UnkId]!;

        int bytePieces = 0, control = 0, unreachable = 0;
        bool multiDigit = false;
        for (int id = 0; id < n; id++)
        {
            string piece = pieces[id]!;
            SentencePieceType kind;
            float score = 0f;
            if (id == result.UnkId)
            {
                kind = SentencePieceType.Unknown;
            }
            else if (special.TryGetValue(id, out bool isSpecial))
            {
                kind = isSpecial ? SentencePieceType.Control : SentencePieceType.UserDefined;
                if (isSpecial)
                {
                    control++;
                }
            }
            else if (byteFallback && BytePieceRegex().IsMatch(piece))
            {
                kind = SentencePieceType.Byte;
                bytePieces++;
            }
            else
            {
                kind = SentencePieceType.Normal;
                if (firstRank.TryGetValue(piece, out int r))
                {
                    score = -r;
                }
                else
                {
                    // Never produced by a merge: single characters (the initial symbols), whose score
                    // plays no part in BPE; ranked below every merge result.
                    score = -(mergeCount + id);
                    if (MathChecker.CodePointCount(piece) > 1)
                    {
                        unreachable++;
                    }
                }

                multiDigit |= HasTwoDigits(piece);
            }

            result.Pieces.Add(new SentencePieceEntry(piece, score, kind));
        }

        result.SplitDigits = !multiDigit;
        int missing = CountMissingSplits(pieces, ids, result.Pieces, mergeSet);
        report = new ConversionReport(n, mergeCount, bytePieces, control, unreachable, missing);
        return result;
    }

    private static (bool AddDummyPrefix, bool Escape) ReadNormalization(JsonElement root)
    {
        bool prefix = false, escape = false;
        if (root.TryGetProperty("normalizer", out JsonElement norm) && norm.ValueKind == JsonValueKind.Object)
        {
            foreach (JsonElement step in Flatten(norm, "normalizers"))
            {
                string kind = step.GetProperty("type").GetString() ?? "";
                switch (kind)
                {
                    case "Prepend" when step.GetProperty("prepend").GetString() == "\u2581":
                        prefix = true;
                        break;
                    case "Replace" when ReplaceIsSpaceToMeta(step):
                        escape = true;
                        break;
                    default:
                        throw new NotSupportedException($"normalizer step '{kind}' has no SentencePiece equivalent here");
                }
            }
        }

        if (root.TryGetProperty("pre_tokenizer", out JsonElement pre) && pre.ValueKind == JsonValueKind.Object)
        {
            foreach (JsonElement step in Flatten(pre, "pretokenizers"))
            {
                string kind = step.GetProperty("type").GetString() ?? "";
                if (kind != "Metaspace")
                {
                    throw new NotSupportedException($"pre_tokenizer '{kind}' has no SentencePiece equivalent here");
                }

                escape = true;
                string scheme = step.TryGetProperty("prepend_scheme", out JsonElement ps) ? ps.GetString() ?? "always"
                    : step.TryGetProperty("add_prefix_space", out JsonElement aps) && aps.ValueKind == JsonValueKind.False ? "never" : "always";
                prefix |= scheme != "never";
            }
        }

        return (prefix, escape);
    }

    private static bool ReplaceIsSpaceToMeta(JsonElement step) =>
        step.TryGetProperty("pattern", out JsonElement pat)
        && pat.TryGetProperty("String", out JsonElement s) && s.GetString() == " "
        && step.TryGetProperty("content", out JsonElement c) && c.GetString() == "\u2581";

    private static IEnumerable<JsonElement> Flatten(JsonElement element, string listName)
    {
        if (element.GetProperty("type").GetString() == "Sequence")
        {
            foreach (JsonElement inner in element.GetProperty(listName).EnumerateArray())
            {
                foreach (JsonElement e in Flatten(inner, listName))
                {
                    yield return e;
                }
            }
        }
        else
        {
            yield return element;
        }
    }

    private static bool HasTwoDigits(string piece)
    {
        int digits = 0;
        foreach (char c in piece)
        {
            if (char.IsAsciiDigit(c) && ++digits >= 2)
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>Splits of a normal piece into two normal/user pieces that no merge rule covers.</summary>
    private static int CountMissingSplits(string?[] pieces, Dictionary<string, int> ids, List<SentencePieceEntry> entries, HashSet<(int, int)> merges)
    {
        int missing = 0;
        for (int id = 0; id < pieces.Length; id++)
        {
            if (entries[id].Type != SentencePieceType.Normal)
            {
                continue;
            }

            string p = pieces[id]!;
            for (int k = 1; k < p.Length; k++)
            {
                if (char.IsLowSurrogate(p[k]) && char.IsHighSurrogate(p[k - 1]))
                {
                    continue;
                }

                if (ids.TryGetValue(p[..k], out int a) && ids.TryGetValue(p[k..], out int b)
                    && IsMergeable(entries[a].Type) && IsMergeable(entries[b].Type) && !merges.Contains((a, b)))
                {
                    missing++;
                }
            }
        }

        return missing;
    }

    private static bool IsMergeable(SentencePieceType t) => t is SentencePieceType.Normal or SentencePieceType.UserDefined;
}
