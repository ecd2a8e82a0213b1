// Package nvm is a card's non-volatile memory: a small key-value store over a
// raw medium (a file, or bytes in RAM) whose every update is atomic — a power
// cut at any write leaves either the old or the new state, never a mix.
//
// It imports only the standard library (os only for the file medium in
// file.go). Card and applet code reach it through *Memory; only tools and
// tests pick a Medium.
//
// # Layout on the medium
//
// The medium holds a fixed header and two equal slots, A and B (shadow
// images). All integers are big-endian.
//
//	offset 0, one page: medium header, written once by Format
//	    [8]  magic "cardnvm\x00"
//	    [2]  version (1)
//	    [2]  reserved, zero
//	    [4]  capacity: the payload bytes a slot can hold
//	    [4]  CRC-32C (Castagnoli) of the 16 bytes above
//	offset PageSize: slot A; offset PageSize+slotSize: slot B, where
//	slotSize is 16+capacity+32 rounded up to a whole page
//	    [4]  slot magic "slot"
//	    [8]  sequence number
//	    [4]  payload length (at most capacity)
//	    [n]  payload: the records in strictly increasing key order, each
//	         [1] key length (1..MaxKeyLen), key,
//	         [4] value length, value
//	    [32] SHA-256 of the slot header and payload
//
// MediumSize(capacity) is PageSize+2*slotSize.
//
// # Commits
//
// An update writes the whole new image into the slot that does not hold
// the current image, with sequence number current+1, in WriteAt calls
// of at most one page each, covering only the used part of the slot, and
// then syncs the medium. The current slot is never touched, so whatever the
// medium does with the unsynced pages (tear one, drop some, reorder them),
// the old image stays intact; the new one becomes valid only when every one
// of its bytes has arrived, because its checksum covers them all. Open and
// Recover take the valid slot with the highest sequence number (slot A on a
// tie); a torn slot fails its checksum and is ignored.
//
// The Memory keeps the current image in RAM with where its records start.
// An update builds the new image from it in a reused buffer: the records
// it does not change are copied in runs, only the changed ones are
// encoded, and the result is byte for byte what encoding every record
// would give (patch, tested against encodeSlot). The checksum is computed
// over the whole image each time, as the layout requires.
//
// # Failures
//
// Any error the medium returns during a commit (a WriteAt or the Sync) is
// treated as a power loss: the Memory becomes failed, Err and every later
// Update return an error wrapping both ErrPowerLost and the medium's error,
// and Get and Keys keep serving the last state committed before the
// failure. The medium may by then hold that state or the new one; Recover
// re-reads it, as a card does when powered again, and clears the error.
package nvm

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Medium is the raw storage under a Memory: a fixed-size byte array that can
// be read and written at an offset and flushed. *os.File satisfies it.
// A medium that has lost power returns an error wrapping ErrPowerLost from
// every later call.
type Medium interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
}

var (
	// ErrPowerLost means the medium stopped accepting writes mid-update (a
	// power cut). The Memory refuses everything until Recover.
	ErrPowerLost = errors.New("nvm: power lost")
	// ErrFull means an update would not fit in the memory's capacity; the
	// update was not applied.
	ErrFull = errors.New("nvm: memory full")
	// ErrCorrupt means no valid image was found on the medium.
	ErrCorrupt = errors.New("nvm: no valid image")
	// ErrClosed means the Memory was closed; Get and Keys still serve the
	// last committed state.
	ErrClosed = errors.New("nvm: memory closed")
)

// PageSize is the unit of a physical write: every WriteAt a Memory issues is
// at most one page, as on EEPROM.
const PageSize = 64

// MaxKeyLen is the longest key a record may have; keys are never empty.
const MaxKeyLen = 64

// MaxCapacity is the largest capacity Format accepts and Open believes.
const MaxCapacity = 1 << 30

// Layout constants (see the package doc).
const (
	headerLen     = 20 // medium header bytes in use; the header takes a page
	version       = 1
	slotHeaderLen = 16
	sumLen        = sha256.Size
	recordOver    = 1 + 4 // key length and value length fields

	// maxReusedWrites bounds the map of writes an Update keeps for the
	// next: clearing a map costs its size, and a personalization's
	// transaction is far larger than a command's.
	maxReusedWrites = 16
)

var (
	headerMagic = [8]byte{'c', 'a', 'r', 'd', 'n', 'v', 'm', 0}
	slotMagic   = [4]byte{'s', 'l', 'o', 't'}
	castagnoli  = crc32.MakeTable(crc32.Castagnoli)
)

// slotSize is the size of one slot for capacity payload bytes.
func slotSize(capacity int) int {
	return (slotHeaderLen + capacity + sumLen + PageSize - 1) / PageSize * PageSize
}

// slotOffset is where slot i (0 or 1) starts.
func slotOffset(capacity, i int) int64 {
	return int64(PageSize) + int64(i)*int64(slotSize(capacity))
}

// MediumSize returns the bytes a medium needs to hold a memory of the given
// capacity. It panics if capacity is negative or above MaxCapacity.
func MediumSize(capacity int) int {
	if capacity < 0 || capacity > MaxCapacity {
		panic("nvm: MediumSize: capacity " + strconv.Itoa(capacity) + " out of range")
	}
	return PageSize + 2*slotSize(capacity)
}

// Memory is an open non-volatile memory. It is safe for concurrent use:
// Updates run one at a time, and Get, Keys, Used and Err never wait for a
// commit's writes.
type Memory struct {
	m        Medium
	capacity int

	// wmu serialises Update, Recover and Close. Calling one of them from
	// inside an Update's fn deadlocks: transactions do not nest.
	wmu sync.Mutex

	// Fields below are guarded by wmu.
	spare   *image             // buffers for the next image; nobody reads them
	over    map[string]txValue // the open transaction's writes, reused
	changed []string           // scratch for patch

	// Fields below are guarded by mu; they are changed only with wmu held
	// too, so a holder of wmu may read them without mu.
	mu     sync.RWMutex
	cur    *image // committed state; not modified while current (see Get)
	seq    uint64 // sequence number of the current image
	slot   int    // slot holding the current image
	err    error  // sticky failure, wraps ErrPowerLost
	closed bool

	memos sync.Map // *Memo[T] → *memoEntry[T]; see memo.go
}

// Format writes an empty image of the given capacity (bytes usable by
// records) to m, destroying what was there. m must hold at least
// MediumSize(capacity) bytes. Format is not atomic: a power cut during it
// leaves a medium that may not open.
func Format(m Medium, capacity int) error {
	if capacity < 0 || capacity > MaxCapacity {
		return fmt.Errorf("nvm: formatting: capacity %d out of range 0..%d", capacity, MaxCapacity)
	}
	// Invalidate both slots first, so no image of an earlier format
	// survives, then write the header and an empty image in slot A.
	zero := make([]byte, PageSize)
	for i := range 2 {
		if _, err := m.WriteAt(zero, slotOffset(capacity, i)); err != nil {
			return fmt.Errorf("nvm: formatting: %w", err)
		}
	}
	// Touch the last byte so a short medium fails now, not at the first
	// update that reaches it.
	if _, err := m.WriteAt(zero[:1], int64(MediumSize(capacity)-1)); err != nil {
		return fmt.Errorf("nvm: formatting: medium too small: %w", err)
	}
	hdr := make([]byte, PageSize)
	copy(hdr, headerMagic[:])
	binary.BigEndian.PutUint16(hdr[8:], version)
	binary.BigEndian.PutUint32(hdr[12:], uint32(capacity))
	binary.BigEndian.PutUint32(hdr[16:], crc32.Checksum(hdr[:16], castagnoli))
	if _, err := m.WriteAt(hdr, 0); err != nil {
		return fmt.Errorf("nvm: formatting: %w", err)
	}
	if err := writeSlot(m, slotOffset(capacity, 0), encodeSlot(1, nil)); err != nil {
		return fmt.Errorf("nvm: formatting: %w", err)
	}
	if err := m.Sync(); err != nil {
		return fmt.Errorf("nvm: formatting: %w", err)
	}
	return nil
}

// Open reads the newest valid image from m. It returns an error wrapping
// ErrCorrupt if m holds no valid header or no valid image.
func Open(m Medium) (*Memory, error) {
	st, err := load(m)
	if err != nil {
		return nil, err
	}
	mem := &Memory{m: m}
	mem.set(st)
	return mem, nil
}

// state is what load finds on a medium.
type state struct {
	capacity int
	img      *image
	seq      uint64
	slot     int
}

func (mem *Memory) set(st state) {
	mem.capacity = st.capacity
	mem.cur = st.img
	mem.seq = st.seq
	mem.slot = st.slot
}

// load reads the header and both slots of m.
func load(m Medium) (state, error) {
	var hdr [headerLen]byte
	if _, err := m.ReadAt(hdr[:], 0); err != nil {
		return state{}, fmt.Errorf("nvm: reading header: %w", corrupt(err))
	}
	if !bytes.Equal(hdr[:8], headerMagic[:]) {
		return state{}, fmt.Errorf("%w: bad header magic", ErrCorrupt)
	}
	if crc32.Checksum(hdr[:16], castagnoli) != binary.BigEndian.Uint32(hdr[16:]) {
		return state{}, fmt.Errorf("%w: bad header checksum", ErrCorrupt)
	}
	if v := binary.BigEndian.Uint16(hdr[8:]); v != version {
		return state{}, fmt.Errorf("%w: unknown version %d", ErrCorrupt, v)
	}
	capacity := binary.BigEndian.Uint32(hdr[12:])
	if capacity > MaxCapacity {
		return state{}, fmt.Errorf("%w: capacity %d too large", ErrCorrupt, capacity)
	}
	st := state{capacity: int(capacity), slot: -1}
	var last [1]byte
	if _, err := m.ReadAt(last[:], int64(MediumSize(st.capacity)-1)); err != nil {
		return state{}, fmt.Errorf("nvm: reading header: medium too small for capacity %d: %w", capacity, corrupt(err))
	}
	var errs [2]error
	for i := range 2 {
		seq, img, err := readSlot(m, slotOffset(st.capacity, i), st.capacity)
		if err != nil && !errors.Is(err, errInvalid) {
			return state{}, fmt.Errorf("nvm: reading slot %c: %w", 'A'+i, err)
		}
		if err != nil {
			errs[i] = err
			continue
		}
		if st.slot < 0 || seq > st.seq {
			st.img, st.seq, st.slot = img, seq, i
		}
	}
	if st.slot < 0 {
		return state{}, fmt.Errorf("%w: slot A: %v; slot B: %v", ErrCorrupt, errs[0], errs[1])
	}
	return st, nil
}

// corrupt makes a short read of the medium an ErrCorrupt.
func corrupt(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return err
}

// errInvalid marks a slot that does not hold a valid image.
var errInvalid = errors.New("invalid image")

// readSlot reads and checks the slot at off.
func readSlot(m Medium, off int64, capacity int) (seq uint64, img *image, err error) {
	var h [slotHeaderLen]byte
	if _, err := m.ReadAt(h[:], off); err != nil {
		return 0, nil, err
	}
	if !bytes.Equal(h[:4], slotMagic[:]) {
		return 0, nil, fmt.Errorf("%w: bad magic", errInvalid)
	}
	n := binary.BigEndian.Uint32(h[12:])
	if uint64(n) > uint64(capacity) {
		return 0, nil, fmt.Errorf("%w: payload length %d over capacity %d", errInvalid, n, capacity)
	}
	buf := make([]byte, slotHeaderLen+int(n)+sumLen)
	if _, err := m.ReadAt(buf, off); err != nil {
		return 0, nil, err
	}
	body, sum := buf[:len(buf)-sumLen], buf[len(buf)-sumLen:]
	if s := sha256.Sum256(body); !bytes.Equal(s[:], sum) {
		return 0, nil, fmt.Errorf("%w: bad checksum", errInvalid)
	}
	img, err = parseImage(buf)
	if err != nil {
		return 0, nil, fmt.Errorf("%w: %w", errInvalid, err)
	}
	return binary.BigEndian.Uint64(h[4:]), img, nil
}

// writeSlot writes img at off, one page per WriteAt.
func writeSlot(m Medium, off int64, img []byte) error {
	for p := 0; p < len(img); p += PageSize {
		end := min(p+PageSize, len(img))
		if _, err := m.WriteAt(img[p:end], off+int64(p)); err != nil {
			return err
		}
	}
	return nil
}

// Get returns a copy of the value stored under key, or nil if absent. A
// value stored empty comes back as a non-nil empty slice.
func (mem *Memory) Get(key string) []byte {
	// The copy is made under the lock: the buffer of an image stops being
	// current at the next commit and is reused by the one after.
	mem.mu.RLock()
	v, ok := mem.cur.lookup(key)
	if ok {
		v = append([]byte{}, v...)
	}
	mem.mu.RUnlock()
	return v
}

// Keys returns the stored keys that start with prefix, sorted.
func (mem *Memory) Keys(prefix string) []string {
	// The image is reused after the next commit but one; its keys slice is
	// never modified, so reading it needs no lock.
	mem.mu.RLock()
	base := mem.cur.keys
	mem.mu.RUnlock()
	return keys(base, nil, prefix)
}

// keys lists the keys of base (sorted), as changed by over, that start
// with prefix.
func keys(base []string, over map[string]txValue, prefix string) []string {
	var ks []string
	lo, _ := slices.BinarySearch(base, prefix)
	for _, k := range base[lo:] {
		if !strings.HasPrefix(k, prefix) {
			break // keys are sorted
		}
		if _, ok := over[k]; !ok {
			ks = append(ks, k)
		}
	}
	n := len(ks)
	for k, v := range over {
		if !v.deleted && strings.HasPrefix(k, prefix) {
			ks = append(ks, k)
		}
	}
	if len(ks) > n {
		slices.Sort(ks)
	}
	return ks
}

// Update runs fn in a transaction. If fn returns nil the transaction's
// writes are persisted atomically before Update returns; if fn returns an
// error or panics, nothing is written. Update returns fn's error, ErrFull,
// or an error wrapping ErrPowerLost.
//
// If fn panics, Update re-panics with the same value after discarding the
// transaction. Updates run one at a time; fn may call Get, Keys, Used,
// Capacity and Err (which see the committed state, not the transaction's),
// but calling Update, Recover or Close from fn deadlocks. A transaction that
// changes nothing writes nothing. After a failed commit, Update returns
// the failure (see Err) without calling fn until Recover succeeds; after
// Close it returns ErrClosed.
func (mem *Memory) Update(fn func(tx *Tx) error) error {
	mem.wmu.Lock()
	defer mem.wmu.Unlock()
	if mem.closed {
		return ErrClosed
	}
	if mem.err != nil {
		return mem.err
	}
	// The map of writes is reused: a Tx kept past its Update panics
	// before it reaches the map (check), so only this Update's Tx uses it.
	if mem.over == nil || len(mem.over) > maxReusedWrites {
		mem.over = make(map[string]txValue)
	}
	clear(mem.over)
	tx := &Tx{base: mem.cur, over: mem.over}
	defer func() { tx.done = true }()
	if err := fn(tx); err != nil {
		return err
	}
	if len(tx.over) == 0 {
		return nil
	}
	img, changed, err := patch(mem.cur, mem.spare, mem.seq+1, tx.over, mem.capacity, mem.changed)
	mem.changed = changed[:0]
	if err != nil {
		return err
	}
	mem.spare = img // until the commit makes it cur
	next := 1 - mem.slot
	err = writeSlot(mem.m, slotOffset(mem.capacity, next), img.buf)
	if err == nil {
		err = mem.m.Sync()
	}
	mem.mu.Lock()
	defer mem.mu.Unlock()
	if err != nil {
		if errors.Is(err, ErrPowerLost) {
			mem.err = fmt.Errorf("nvm: committing update: %w", err)
		} else {
			mem.err = fmt.Errorf("nvm: committing update: %w: %w", ErrPowerLost, err)
		}
		return mem.err
	}
	// Readers copy values under mu, so once cur is replaced nobody reads
	// the old image's buffer: it holds the next image.
	mem.spare, mem.cur = mem.cur, img
	mem.seq++
	mem.slot = next
	return nil
}

// Err returns ErrPowerLost (wrapped) once the medium has lost power, nil otherwise.
// Any medium error during a commit counts as a power loss; the error
// returned also wraps the medium's own error.
func (mem *Memory) Err() error {
	mem.mu.RLock()
	defer mem.mu.RUnlock()
	return mem.err
}

// Recover re-reads the medium after a power loss, as a card does when it is
// powered again, and clears the error. It may be called at any time; it
// waits for a running Update. If the medium holds no valid image, Recover
// returns an error wrapping ErrCorrupt and the Memory stays failed, still
// serving its last state to Get. It returns ErrClosed after Close.
func (mem *Memory) Recover() error {
	mem.wmu.Lock()
	defer mem.wmu.Unlock()
	if mem.closed {
		return ErrClosed
	}
	st, err := load(mem.m)
	mem.mu.Lock()
	defer mem.mu.Unlock()
	if err != nil {
		mem.err = fmt.Errorf("nvm: recovering: %w: %w", ErrPowerLost, err)
		return fmt.Errorf("nvm: recovering: %w", err)
	}
	mem.set(st)
	mem.err = nil
	return nil
}

// Close closes the medium if it is an io.Closer, and is a no-op otherwise.
// It waits for a running Update. After Close, Update and Recover return
// ErrClosed while Get and Keys serve the last committed state. Closing
// twice is a no-op.
func (mem *Memory) Close() error {
	mem.wmu.Lock()
	defer mem.wmu.Unlock()
	if mem.closed {
		return nil
	}
	mem.mu.Lock()
	mem.closed = true
	mem.mu.Unlock()
	if c, ok := mem.m.(io.Closer); ok {
		if err := c.Close(); err != nil {
			return fmt.Errorf("nvm: closing medium: %w", err)
		}
	}
	return nil
}

// Capacity returns the bytes usable by records; Used the bytes they take now.
// A record takes 5 bytes plus its key and value.
func (mem *Memory) Capacity() int {
	mem.mu.RLock()
	defer mem.mu.RUnlock()
	return mem.capacity
}

// Used returns the bytes the current records take in the image.
func (mem *Memory) Used() int {
	mem.mu.RLock()
	defer mem.mu.RUnlock()
	return mem.cur.payloadLen()
}

// Tx is an open transaction; it is only valid inside Update's fn, and
// only on the goroutine running fn. Its methods panic once fn has returned.
type Tx struct {
	base *image // committed state, read-only
	over map[string]txValue
	done bool
}

// txValue is a transaction's write to one key.
type txValue struct {
	value   []byte
	deleted bool
}

func (tx *Tx) check() {
	if tx.done {
		panic("nvm: Tx used after its Update returned")
	}
}

func checkKey(op, key string) {
	if len(key) < 1 || len(key) > MaxKeyLen {
		panic(fmt.Sprintf("nvm: Tx.%s: key length %d out of range 1..%d", op, len(key), MaxKeyLen))
	}
}

// Get returns a copy of the value under key as seen by this transaction,
// or nil if absent.
func (tx *Tx) Get(key string) []byte {
	tx.check()
	v, ok := tx.over[key]
	if !ok {
		b, ok := tx.base.lookup(key)
		if !ok {
			return nil
		}
		return append([]byte{}, b...)
	}
	if v.deleted {
		return nil
	}
	return append([]byte{}, v.value...)
}

// Keys returns the keys, as seen by this transaction, that start with
// prefix, sorted.
func (tx *Tx) Keys(prefix string) []string {
	tx.check()
	return keys(tx.base.keys, tx.over, prefix)
}

// Put stores a copy of value under key (nil stores an empty value). It
// panics if key is empty or longer than MaxKeyLen bytes. A value too large
// for the memory makes Update return ErrFull.
func (tx *Tx) Put(key string, value []byte) {
	tx.check()
	checkKey("Put", key)
	tx.over[key] = txValue{value: append([]byte{}, value...)}
}

// Delete removes key. It panics if key is empty or longer than MaxKeyLen
// bytes.
func (tx *Tx) Delete(key string) {
	tx.check()
	checkKey("Delete", key)
	if _, ok := slices.BinarySearch(tx.base.keys, key); !ok {
		delete(tx.over, key) // nothing to delete on the medium
		return
	}
	tx.over[key] = txValue{deleted: true}
}
