using System.Globalization;
using System.Text;
using System.Text.Json;

namespace NegDistill.Data.Tests;

/// <summary>
/// An independent, deliberately simple Hugging Face BPE encoder (rank-ordered merges, leftmost first,
/// byte fallback for characters outside the vocabulary, LLaMA's Prepend("▁") + Replace(" ", "▁")
/// normaliser) used to check that the converted SentencePiece model encodes identically.
/// </summary>
internal sealed class ReferenceBpe
{
    private readonly Dictionary<string, int> _vocab = new(StringComparer.Ordinal);
    private readonly Dictionary<(string, string), int> _ranks = new();

    public static ReferenceBpe FromFile(string tokenizerJsonPath) => new(File.ReadAllText(tokenizerJsonPath));

    public static ReferenceBpe FromJson(string tokenizerJson) => new(tokenizerJson);

    private ReferenceBpe(string json)
    {
        using JsonDocument doc = JsonDocument.Parse(json);
        JsonElement model = doc.RootElement.GetProperty("model");
        foreach (JsonProperty p in model.GetProperty("vocab").EnumerateObject())
        {
            _vocab[p.Name] = p.Value.GetInt32();
        }

        int rank = 0;
        foreach (JsonElement m in model.GetProperty("merges").EnumerateArray())
        {
            (string a, string b) = m.ValueKind == JsonValueKind.String
                ? (m.GetString()!.Split(' ')[0], m.GetString()!.Split(' ')[1])
                : (m[0].GetString()!, m[1].GetString()!);
            _ranks.TryAdd((a, b), rank++);
        }
    }

    public int[] Encode(string text)
    {
        if (text.Length == 0)
        {
            return [];
        }

        string normalized = "\u2581" + text.Replace(" ", "\u2581", StringComparison.Ordinal);
        var symbols = new List<string>();
        Span<byte> utf8 = stackalloc byte[4];
        foreach (Rune r in normalized.EnumerateRunes())
        {
            string s = r.ToString();
            if (_vocab.ContainsKey(s))
            {
                symbols.Add(s);
            }
            else
            {
                int n = r.EncodeToUtf8(utf8);
                for (int i = 0; i < n; i++)
                {
                    symbols.Add("<0x" + utf8[i].ToString("X2", CultureInfo.InvariantCulture) + ">");
                }
            }
        }

        while (true)
        {
            int best = -1, bestRank = int.MaxValue;
            for (int i = 0; i + 1 < symbols.Count; i++)
            {
                if (_ranks.TryGetValue((symbols[i], symbols[i + 1]), out int rank) && rank < bestRank)
                {
                    best = i;
                    bestRank = rank;
                }
            }

            if (best < 0)
            {
                break;
            }

            symbols[best] += symbols[best + 1];
            symbols.RemoveAt(best + 1);
        }

        return symbols.Select(s => _vocab[s]).ToArray();
    }
}
