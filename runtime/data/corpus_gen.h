// A procedural generator of English-like text with structure a small byte-level model can learn:
// the corpus that tools/demo.sh trains on (tools/data/corpus.txt, from zt-gen-corpus --seed 1).
//
// It writes chapters of paragraphs about an invented world (creatures, towns, trades and a cast of
// named characters whose attributes, such as kind, home, trade, clothes, age and best friend, are
// drawn once from the seed and then stated consistently everywhere), so that a model can lower its
// loss by learning, in rising order of difficulty: spelling and punctuation, subject-verb agreement
// (she bakes / they bake, a mossling hums / mosslings hum), number words and counting sequences
// (one, two, three ...), the order of the invented weekdays, correct arithmetic written in words
// and digits, dialogue layout, and the facts about each character. All words and templates are
// written in corpus_gen.cpp; nothing is copied from elsewhere.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace zt {

// Exactly `bytes` bytes of ASCII text, a pure function of (seed, bytes): generation stops once the
// text is long enough, the text is cut at `bytes` and its last byte set to a newline. A shorter
// output is a prefix of a longer one with the same seed, up to that last byte.
std::string generate_corpus(uint64_t seed, size_t bytes);

// "zero", "seven", "forty-two", "three hundred and six", "two thousand and ten"; 0 <= n < 10^6.
std::string number_words(int64_t n);

}  // namespace zt
