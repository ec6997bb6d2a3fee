// Byte-level BPE tokenizer (GPT-2 family) from a GGUF file's tokenizer metadata
// (tokenizer.ggml.tokens and tokenizer.ggml.merges) or a Hugging Face directory (tokenizer.json,
// or GPT-2's vocab.json + merges.txt). Two pre-tokenizations, both GPT-2's pattern
// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ :
// - smollm (llama.cpp's rule for SmolLM): every digit is its own piece first, and letters are
//   ASCII letters plus every non-ASCII UTF-8 sequence;
// - gpt2 (GPT-2, OPT): the pattern itself over Unicode's letters, numbers and white space
//   (llama/unicode_classes.hpp).
// Special tokens around the text (OPT's BOS </s>) come from tokenizer.json's TemplateProcessing
// post-processor or tokenizer_config.json's add_bos_token, as transformers adds them.
#pragma once

#include <awq/error.hpp>
#include <awq/io/gguf.hpp>
#include <awq/io/json_error.hpp>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#include "llama/unicode_classes.hpp"

namespace awq_example {

class BpeTokenizer {
 public:
  /// How text is cut into the pieces the BPE runs on (see the file comment).
  enum class Pretokenizer { smollm, gpt2 };

  explicit BpeTokenizer(const awq::io::GgufFile& g) : BpeTokenizer(gguf_tokens(g), gguf_merges(g)) {}

  /// From the token strings (by id) and the merges ("a b", by rank).
  BpeTokenizer(const std::vector<std::string>& toks, const std::vector<std::string>& merges, Pretokenizer pre = Pretokenizer::smollm)
      : pre_(pre) {
    for (std::size_t i = 0; i < toks.size(); ++i) vocab_.emplace(toks[i], static_cast<int>(i));
    id_to_token_ = toks;
    for (std::size_t i = 0; i < merges.size(); ++i) ranks_.emplace(merges[i], static_cast<int>(i));
    for (int b = 0; b < 256; ++b) byte_sym_[b] = utf8(byte_to_cp(b));
    for (int b = 0; b < 256; ++b) sym_byte_[byte_sym_[b]] = static_cast<unsigned char>(b);
  }

  /// From a Hugging Face tokenizer.json of a byte-level BPE model (merges as "a b" or ["a", "b"]).
  ///
  /// Only what encode() implements is accepted: model BPE without byte fallback, dropout or
  /// subword affixes, no normalizer, and the pre-tokenizer Sequence[Digits(individual_digits),
  /// ByteLevel(use_regex, no prefix space)] (llama.cpp's "smollm") or ByteLevel(use_regex, no
  /// prefix space) alone (GPT-2, OPT); a TemplateProcessing post-processor adds its special tokens
  /// around the text. Anything else — a Llama 3 / Qwen2 Split regex, an NFC normalizer, a prefix
  /// space — would encode differently, so it is an awq::Error naming the file and the field.
  static BpeTokenizer from_hf_json(const std::string& path) {
    const nlohmann::json j = read_json(path);
    const auto bad = [&](const std::string& what) { return awq::Error("BpeTokenizer: " + path + ": " + what); };
    if (!j.is_object() || !j.contains("model") || !j["model"].is_object()) throw bad("has no \"model\" object");
    const auto& m = j["model"];
    if (field(m, "type") != "BPE") throw bad("model.type is " + field(m, "type").dump() + ", only \"BPE\" is supported");
    for (const char* k : {"byte_fallback", "dropout", "continuing_subword_prefix", "end_of_word_suffix", "ignore_merges"})
      if (!is_off(field(m, k))) throw bad(awq::detail::concat("model.", k, " is ", field(m, k).dump(), ", which is not supported"));
    if (!field(j, "normalizer").is_null()) throw bad("has a normalizer (" + field(field(j, "normalizer"), "type").dump() + "), which is not supported");
    const auto& pre = field(j, "pre_tokenizer");
    const auto pres = field(pre, "pretokenizers");
    const auto byte_level = [&](const nlohmann::json& p) {
      return field(p, "type") == "ByteLevel" && field(p, "use_regex") == true && is_off(field(p, "add_prefix_space"));
    };
    Pretokenizer mode = Pretokenizer::gpt2;
    if (field(pre, "type") == "Sequence" && pres.is_array() && pres.size() == 2 && field(pres[0], "type") == "Digits" &&
        field(pres[0], "individual_digits") == true && byte_level(pres[1]))
      mode = Pretokenizer::smollm;
    else if (!byte_level(pre))
      throw bad("pre_tokenizer " + pre.dump() +
                " is not supported; only Sequence[Digits(individual_digits), ByteLevel(use_regex, no prefix space)] or "
                "ByteLevel(use_regex, no prefix space)");

    const auto& vocab = field(m, "vocab");
    if (!vocab.is_object() || vocab.empty()) throw bad("model.vocab is not a non-empty object");
    std::vector<std::string> toks;
    std::vector<bool> seen;
    for (const auto& [tok, id] : vocab.items()) place(toks, seen, tok, id, "model.vocab", bad);
    const auto& added = field(j, "added_tokens");
    if (!added.is_null() && !added.is_array()) throw bad("added_tokens is not an array");
    if (added.is_array())
      for (const auto& a : added) {
        if (!field(a, "content").is_string()) throw bad("added_tokens: an entry has no string content: " + a.dump());
        place(toks, seen, a["content"].get<std::string>(), field(a, "id"), "added_tokens", bad);
      }
    check_dense(seen, bad);

    const auto& ms = field(m, "merges");
    if (!ms.is_array()) throw bad("model.merges is not an array");
    std::vector<std::string> merges;
    merges.reserve(ms.size());
    for (std::size_t r = 0; r < ms.size(); ++r) {
      const auto& e = ms[r];
      const bool pair = e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string();
      const std::string s = pair ? e[0].get<std::string>() + " " + e[1].get<std::string>() : e.is_string() ? e.get<std::string>() : "";
      if (!is_merge(s) || (pair && e[0].get<std::string>().find(' ') != std::string::npos))
        throw bad(awq::detail::concat("model.merges[", r, "] is ", e.dump(), "; expected \"a b\" or [\"a\", \"b\"]"));
      merges.push_back(s);
    }
    BpeTokenizer t(toks, merges, mode);
    if (field(m, "unk_token").is_string()) t.unk_ = t.special_id(field(m, "unk_token").get<std::string>(), "model.unk_token", bad);
    t.post_process(field(j, "post_processor"), bad);
    return t;
  }

  /// From GPT-2's slow-tokenizer files: `vocab_json` ({token: id}), `merges_txt` (one "a b" a
  /// line after a "#version" line) and, when not empty, `config_json` (tokenizer_config.json:
  /// add_bos_token with bos_token prepends it, as transformers' GPT2Tokenizer; unk_token stands
  /// for a byte symbol missing from the vocabulary). GPT-2's pre-tokenization.
  static BpeTokenizer from_vocab_merges(const std::string& vocab_json, const std::string& merges_txt, const std::string& config_json = {}) {
    const nlohmann::json v = read_json(vocab_json);
    const auto bad = [&](const std::string& what) { return awq::Error("BpeTokenizer: " + what); };
    if (!v.is_object() || v.empty()) throw bad(vocab_json + " is not a non-empty JSON object");
    std::vector<std::string> toks;
    std::vector<bool> seen;
    for (const auto& [tok, id] : v.items()) place(toks, seen, tok, id, vocab_json.c_str(), bad);
    check_dense(seen, [&](const std::string& what) { return bad(vocab_json + ": " + what); });
    std::ifstream f(merges_txt);
    awq::detail::require(static_cast<bool>(f), "BpeTokenizer: cannot open ", merges_txt);
    std::vector<std::string> merges;
    std::string line;
    for (std::size_t n = 1; std::getline(f, line); ++n) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.empty() || (n == 1 && line.rfind("#version", 0) == 0)) continue;
      if (!is_merge(line)) throw bad(awq::detail::concat(merges_txt, ": line ", n, " is '", line, "'; expected two symbols \"a b\""));
      merges.push_back(line);
    }
    BpeTokenizer t(toks, merges, Pretokenizer::gpt2);
    if (config_json.empty()) return t;
    const nlohmann::json c = read_json(config_json);
    const auto cbad = [&](const std::string& what) { return bad(config_json + ": " + what); };
    const auto token = [&](const char* k, const char* fallback) {
      const nlohmann::json& e = field(c, k);
      if (e.is_string()) return e.get<std::string>();
      if (field(e, "content").is_string()) return e["content"].get<std::string>();
      return std::string(fallback);  // GPT2Tokenizer's default
    };
    if (field(c, "add_bos_token") == true) t.prefix_.push_back(t.special_id(token("bos_token", "<|endoftext|>"), "bos_token", cbad));
    const std::string unk = token("unk_token", "<|endoftext|>");
    if (t.vocab_.count(unk)) t.unk_ = t.vocab_.at(unk);
    return t;
  }

  /// The tokenizer of a Hugging Face directory: tokenizer.json, else vocab.json + merges.txt
  /// (with tokenizer_config.json when present).
  static BpeTokenizer from_hf_dir(const std::string& dir) {
    namespace fs = std::filesystem;
    const fs::path d(dir);
    if (fs::exists(d / "tokenizer.json")) return from_hf_json((d / "tokenizer.json").string());
    awq::detail::require(fs::exists(d / "vocab.json") && fs::exists(d / "merges.txt"), dir,
                         " has no tokenizer (accepted: tokenizer.json, or vocab.json with merges.txt)");
    const fs::path cfg = d / "tokenizer_config.json";
    return from_vocab_merges((d / "vocab.json").string(), (d / "merges.txt").string(), fs::exists(cfg) ? cfg.string() : std::string());
  }

  /// The ids of `text`, with the special tokens the tokenizer adds around it.
  std::vector<int> encode(const std::string& text) {
    std::vector<int> ids = prefix_;
    for (const std::string& piece : pre_ == Pretokenizer::gpt2 ? pretokenize_gpt2(text) : pretokenize(text)) {
      auto it = cache_.find(piece);
      if (it == cache_.end()) it = cache_.emplace(piece, bpe(piece)).first;
      ids.insert(ids.end(), it->second.begin(), it->second.end());
    }
    ids.insert(ids.end(), suffix_.begin(), suffix_.end());
    return ids;
  }

  /// The special tokens encode() puts before and after the text (OPT: {2} and {}).
  const std::vector<int>& prefix() const { return prefix_; }
  const std::vector<int>& suffix() const { return suffix_; }  ///< \copydoc prefix
  Pretokenizer pretokenizer() const { return pre_; }           ///< how text is cut

  std::string decode(const std::vector<int>& ids) const {
    std::string out;
    for (int id : ids) {
      // An id past the tokenizer's tokens (an embedding padded beyond them) has no text.
      awq::detail::require(id >= 0 && static_cast<std::size_t>(id) < id_to_token_.size(), "the tokenizer has no token ", id, " (it has ",
                           id_to_token_.size(), "; the model's embedding is larger than its vocabulary)");
      const std::string& t = id_to_token_[static_cast<std::size_t>(id)];
      for (std::size_t i = 0; i < t.size();) {
        const std::size_t n = utf8_len(static_cast<unsigned char>(t[i]));
        const auto it = sym_byte_.find(t.substr(i, n));
        if (it != sym_byte_.end()) out.push_back(static_cast<char>(it->second));
        else out += t.substr(i, n);
        i += n;
      }
    }
    return out;
  }

  std::size_t vocab_size() const { return id_to_token_.size(); }

  /// The pieces of the smollm pre-tokenization, exposed for tests.
  static std::vector<std::string> pretokenize(const std::string& s) {
    std::vector<std::string> out;
    const std::size_t n = s.size();
    auto cls = [&](std::size_t i) {  // 0 space, 1 letter, 2 digit, 3 other
      const unsigned char c = static_cast<unsigned char>(s[i]);
      if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v') return 0;
      if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80) return 1;
      if (c >= '0' && c <= '9') return 2;
      return 3;
    };
    std::size_t i = 0;
    while (i < n) {
      const int k = cls(i);
      std::size_t j = i;
      if (k == 2) {
        j = i + 1;  // every digit alone
      } else if (s[i] == '\'' && i + 1 < n) {
        static const char* const contr[] = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
        for (const char* c : contr) {
          const std::string cs(c);
          if (s.compare(i, cs.size(), cs) == 0) {
            j = i + cs.size();
            break;
          }
        }
      }
      if (j == i) {
        const bool lead_space = s[i] == ' ' && i + 1 < n && cls(i + 1) != 0 && cls(i + 1) != 2;
        const std::size_t b = lead_space ? i + 1 : i;
        const int kb = cls(b);
        if (kb == 1 || kb == 3) {
          j = b;
          while (j < n && cls(j) == kb) ++j;
        } else {  // whitespace run; leave the last one for a following non-space
          j = i;
          while (j < n && cls(j) == 0) ++j;
          if (j < n && j - i > 1 && cls(j) != 2) --j;  // digits were split off first: a run before one ends its piece
        }
      }
      out.push_back(s.substr(i, j - i));
      i = j;
    }
    return out;
  }

  /// The pieces of GPT-2's pre-tokenization (its regex, alternatives tried in order at each
  /// position), exposed for tests. A byte that is not valid UTF-8 counts as punctuation.
  static std::vector<std::string> pretokenize_gpt2(const std::string& s) {
    std::vector<char32_t> cp;
    std::vector<std::size_t> at;
    for (std::size_t i = 0; i < s.size();) {
      const unsigned char c = static_cast<unsigned char>(s[i]);
      std::size_t n = utf8_len(c);
      char32_t v = n == 1 ? c : n == 2 ? (c & 0x1Fu) : n == 3 ? (c & 0x0Fu) : (c & 0x07u);
      bool ok = c < 0x80 || (c >= 0xC2 && c <= 0xF4 && i + n <= s.size());
      for (std::size_t k = 1; ok && k < n; ++k) {
        const unsigned char d = static_cast<unsigned char>(s[i + k]);
        ok = (d & 0xC0) == 0x80;
        v = (v << 6) | (d & 0x3Fu);
      }
      if (!ok) n = 1, v = 0xFFFD;
      cp.push_back(v);
      at.push_back(i);
      i += n;
    }
    at.push_back(s.size());
    const std::size_t n = cp.size();
    const auto cls = [&](std::size_t i) {  // 0 space, 1 letter, 2 number, 3 other
      return unicode::is_space(cp[i]) ? 0 : unicode::is_letter(cp[i]) ? 1 : unicode::is_number(cp[i]) ? 2 : 3;
    };
    std::vector<std::string> out;
    for (std::size_t i = 0; i < n;) {
      std::size_t j = i;
      if (cp[i] == '\'') {  // 's|'t|'re|'ve|'m|'ll|'d
        for (const char* c : {"s", "t", "re", "ve", "m", "ll", "d"}) {
          std::size_t k = 0;
          while (c[k] && i + 1 + k < n && cp[i + 1 + k] == static_cast<char32_t>(c[k])) ++k;
          if (!c[k]) {
            j = i + 1 + k;
            break;
          }
        }
      }
      if (j == i) {
        const std::size_t b = cp[i] == ' ' && i + 1 < n && cls(i + 1) != 0 ? i + 1 : i;  // " ?" before a non-space
        const int k = cls(b);
        j = b;
        while (j < n && cls(j) == k) ++j;
        if (k == 0 && j < n && j - i > 1) --j;  // \s+(?!\S): the last space goes with what follows
      }
      out.push_back(s.substr(at[i], at[j] - at[i]));
      i = j;
    }
    return out;
  }

 private:
  static const std::vector<std::string>& gguf_tokens(const awq::io::GgufFile& g) {
    awq::detail::require(g.get_string("tokenizer.ggml.model") == "gpt2", "BpeTokenizer: tokenizer.ggml.model is '",
                         g.get_string("tokenizer.ggml.model"), "', only gpt2 (byte-level BPE) is supported");
    return g.value("tokenizer.ggml.tokens").strs;
  }
  /// tokenizer.ggml.merges, every entry checked: a malformed one ("ab", no space between the
  /// pair) would never match a pair, and encode() would quietly fall back to single bytes.
  static const std::vector<std::string>& gguf_merges(const awq::io::GgufFile& g) {
    const awq::io::GgufValue& v = g.value("tokenizer.ggml.merges");
    awq::detail::require(v.type == 9 && (v.array_type == 8 || v.length() == 0), "BpeTokenizer: ", g.path(),
                         ": tokenizer.ggml.merges is not an array of strings");
    for (std::size_t r = 0; r < v.strs.size(); ++r)
      awq::detail::require(is_merge(v.strs[r]), "BpeTokenizer: ", g.path(), ": tokenizer.ggml.merges[", r, "] is '", v.strs[r],
                           "'; expected two symbols separated by one space (\"a b\")");
    return v.strs;
  }

  static nlohmann::json read_json(const std::string& path) {
    std::ifstream f(path);
    awq::detail::require(static_cast<bool>(f), "BpeTokenizer: cannot open ", path);
    try {
      return nlohmann::json::parse(f);
    } catch (const nlohmann::json::exception& e) {  // without nlohmann's "[json.exception...]" id
      throw awq::Error(awq::detail::concat("BpeTokenizer: ", path, " is not valid JSON: ", awq::io::json_error_text(e)));
    }
  }
  static nlohmann::json field(const nlohmann::json& o, const char* k) { return o.is_object() && o.contains(k) ? o[k] : nlohmann::json(); }
  static bool is_off(const nlohmann::json& v) { return v.is_null() || v == false || v == "" || v == 0; }
  /// "a b": two non-empty symbols.
  static bool is_merge(const std::string& s) {
    const auto space = s.find(' ');
    return space != std::string::npos && space != 0 && space + 1 != s.size() && s.find(' ', space + 1) == std::string::npos;
  }
  /// Puts token `tok` at id `id` of the table; `seen` marks the ids given.
  template <class Bad>
  static void place(std::vector<std::string>& toks, std::vector<bool>& seen, const std::string& tok, const nlohmann::json& id,
                    const char* where, const Bad& bad) {
    if (!id.is_number_unsigned() || id.get<std::uint64_t>() >= (1u << 24))
      throw bad(awq::detail::concat(where, ": token '", tok, "' has id ", id.dump()));
    const auto i = id.get<std::size_t>();
    if (i >= toks.size()) {
      toks.resize(i + 1);
      seen.resize(i + 1);
    }
    if (seen[i] && toks[i] != tok) throw bad(awq::detail::concat(where, ": id ", i, " is both '", toks[i], "' and '", tok, "'"));
    toks[i] = tok;
    seen[i] = true;
  }
  template <class Bad>
  static void check_dense(const std::vector<bool>& seen, const Bad& bad) {
    for (std::size_t i = 0; i < seen.size(); ++i)
      if (!seen[i]) throw bad(awq::detail::concat("no token has id ", i, " (ids must run from 0 to ", seen.size() - 1, ")"));
  }
  template <class Bad>
  int special_id(const std::string& tok, const char* where, const Bad& bad) const {
    const auto it = vocab_.find(tok);
    if (it == vocab_.end()) throw bad(awq::detail::concat(where, " '", tok, "' is not in the vocabulary"));
    return it->second;
  }
  /// The special tokens of a TemplateProcessing post-processor's `single` template around $A
  /// (null and ByteLevel add none).
  template <class Bad>
  void post_process(const nlohmann::json& p, const Bad& bad) {
    if (p.is_null() || field(p, "type") == "ByteLevel") return;
    if (field(p, "type") != "TemplateProcessing" || !field(p, "single").is_array())
      throw bad("post_processor " + field(p, "type").dump() + " is not supported (accepted: none, ByteLevel, TemplateProcessing)");
    bool text = false;
    for (const auto& e : p["single"]) {
      if (field(e, "Sequence").is_object()) {
        if (text || field(e["Sequence"], "id") != "A") throw bad("post_processor.single " + p["single"].dump() + " is not one $A with special tokens around it");
        text = true;
        continue;
      }
      const nlohmann::json name = field(field(e, "SpecialToken"), "id");
      const nlohmann::json ids = field(field(field(p, "special_tokens"), name.is_string() ? name.get<std::string>().c_str() : ""), "ids");
      if (!name.is_string() || !ids.is_array())
        throw bad("post_processor: special token " + e.dump() + " is not in post_processor.special_tokens");
      for (const auto& id : ids) {
        if (!id.is_number_unsigned() || id.get<std::size_t>() >= id_to_token_.size())
          throw bad(awq::detail::concat("post_processor: special token ", name.dump(), " has id ", id.dump(), ", outside the vocabulary"));
        (text ? suffix_ : prefix_).push_back(id.get<int>());
      }
    }
    if (!text) throw bad("post_processor.single " + p["single"].dump() + " has no $A");
  }

  static int byte_to_cp(int b) {
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) return b;
    int n = 0;
    for (int x = 0; x < b; ++x)
      if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255))) ++n;
    return 256 + n;
  }
  static std::string utf8(int cp) {
    std::string s;
    if (cp < 0x80) {
      s.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
      s.push_back(static_cast<char>(0xE0 | (cp >> 12)));
      s.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
    return s;
  }
  static std::size_t utf8_len(unsigned char c) { return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4; }

  std::vector<int> bpe(const std::string& piece) const {
    std::vector<std::string> sym;
    for (unsigned char c : piece) sym.push_back(byte_sym_[c]);
    while (sym.size() > 1) {
      int best = -1;
      std::size_t at = 0;
      for (std::size_t i = 0; i + 1 < sym.size(); ++i) {
        const auto it = ranks_.find(sym[i] + " " + sym[i + 1]);
        if (it != ranks_.end() && (best < 0 || it->second < best)) best = it->second, at = i;
      }
      if (best < 0) break;
      sym[at] += sym[at + 1];
      sym.erase(sym.begin() + static_cast<std::ptrdiff_t>(at) + 1);
    }
    std::vector<int> ids;
    for (const auto& t : sym) {
      const auto it = vocab_.find(t);
      awq::detail::require(it != vocab_.end() || unk_ >= 0, "BpeTokenizer: symbol '", t, "' is not in the vocabulary");
      ids.push_back(it != vocab_.end() ? it->second : unk_);
    }
    return ids;
  }

  std::unordered_map<std::string, int> vocab_;
  std::unordered_map<std::string, int> ranks_;
  std::vector<std::string> id_to_token_;
  std::string byte_sym_[256];
  std::unordered_map<std::string, unsigned char> sym_byte_;
  std::unordered_map<std::string, std::vector<int>> cache_;
  Pretokenizer pre_ = Pretokenizer::smollm;
  std::vector<int> prefix_, suffix_;  // special tokens around the text
  int unk_ = -1;                      // for a symbol missing from the vocabulary (-1: an error)
};

}  // namespace awq_example
