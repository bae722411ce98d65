// Package logfile turns mail log files into Messages: plain or gzip files
// (detected by their magic number, not their name) and standard input,
// read line by line with the receiver's line length limit. It owns no
// socket; it is the receiver's side of `wormgate check`, which replays
// rotated logs through the matcher as if they had come over the network.
//
// Rotated logs are given in any order (mail.log.2.gz mail.log.1 mail.log),
// so OpenAll orders files by their first timestamps. RFC 3164 stamps have
// no year: a file's modification time anchors the first one, and from then
// on each stamp anchors the next, so a log that runs from Dec 31 into
// Jan 1 moves on to the next year instead of jumping back to January of
// the old one.
package logfile
