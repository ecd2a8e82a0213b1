package nvm

import "bytes"

// A Memo caches, per Memory, a value decoded from the record under one key,
// such as a parsed private key, so that a command does not decode the same
// bytes again. The cache is keyed by the record's exact bytes: Get decodes
// again whenever the value stored under the key differs in any byte from
// the one it last decoded (or was absent and is now present, or the
// reverse), so a changed record is never answered with a stale value.
//
// Declare one Memo per key and meaning, usually as a package variable; a
// Memo may be used with any number of Memories from any goroutines.
type Memo[T any] struct {
	key    string
	decode func(value []byte) (T, error)
}

// memoEntry is what a Memo keeps in one Memory: the bytes it decoded
// (present false: the key was absent) and what decode made of them.
type memoEntry[T any] struct {
	raw     []byte
	present bool
	v       T
	err     error
}

// NewMemo returns a Memo of the record under key. decode gets a private copy
// of the value, nil if the key is absent; it must depend on those bytes
// alone. It may run more than once for the same bytes when Get is called
// concurrently, and what it returns (value and error) is shared by every
// later Get of the same bytes, so the value must be safe to share and
// callers must not modify it.
func NewMemo[T any](key string, decode func(value []byte) (T, error)) *Memo[T] {
	return &Memo[T]{key: key, decode: decode}
}

// Get returns what decode returns for the value committed under the
// memo's key in mem, decoding only if the bytes differ from the ones last
// decoded for mem. Like Memory.Get it sees the committed state, not that of
// a transaction open in an Update. It is safe for concurrent use.
func (m *Memo[T]) Get(mem *Memory) (T, error) {
	mem.mu.RLock()
	raw, present := mem.cur.lookup(m.key)
	if e, ok := mem.memos.Load(m); ok {
		e := e.(*memoEntry[T])
		if e.present == present && bytes.Equal(e.raw, raw) {
			mem.mu.RUnlock()
			return e.v, e.err
		}
	}
	// Copy under the lock: the image's buffer is reused after the next
	// commit but one.
	var seen, arg []byte
	if present {
		seen = append([]byte{}, raw...)
		arg = append([]byte{}, raw...)
	}
	mem.mu.RUnlock()
	v, err := m.decode(arg)
	mem.memos.Store(m, &memoEntry[T]{raw: seen, present: present, v: v, err: err})
	return v, err
}
